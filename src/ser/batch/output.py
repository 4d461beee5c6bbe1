"""A batch job's results: Parquet parts under one output folder (local or `s3://`), one row per file.

Every part has the same explicit schema — path, label, canonical, one column per score (`score_<label>`)
or per dimension (`dimension_<name>`), duration_s, bundle_id, error — so parts written by different runs
read as one table even when a part holds only errors. A part appears whole or not at all: written to a
hidden name and renamed locally; on S3 an object exists only once its upload completes. Rerunning a job
reads what is there (path and bundle id) and scores only the rest.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ser.answer import AnswerSpec, Prediction
from ser.batch.storage import BatchError, Storage

log = logging.getLogger(__name__)
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
STAGING_PREFIX = ".part-"  # a part being written; left behind only by a process killed mid-write


def result_schema(answer: AnswerSpec) -> pa.Schema:
    """The columns every part of a job with this answer has, in order."""
    prefix = "score_" if answer.is_categorical else "dimension_"
    return pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("label", pa.string()),
            pa.field("canonical", pa.string()),
            *(pa.field(prefix + name, pa.float32()) for name in answer.names),
            pa.field("duration_s", pa.float64()),
            pa.field("bundle_id", pa.string(), nullable=False),
            pa.field("error", pa.string()),
        ]
    )


def result_table(
    schema: pa.Schema, answer: AnswerSpec, paths: Sequence[str], results: Sequence[Prediction | str], bundle_id: str
) -> pa.Table:
    """Rows for `paths`: a Prediction's answer, or a string's error (answer columns null)."""
    prefix = "score_" if answer.is_categorical else "dimension_"
    ok = [r if isinstance(r, Prediction) else None for r in results]
    columns: dict[str, list] = {
        "path": list(paths),
        "label": [p.label if p else None for p in ok],
        "canonical": [p.canonical if p else None for p in ok],
        **{prefix + name: [p.values[name] if p else None for p in ok] for name in answer.names},
        "duration_s": [p.duration_s if p else None for p in ok],
        "bundle_id": [bundle_id] * len(paths),
        "error": [r if isinstance(r, str) else None for r in results],
    }
    return pa.Table.from_pydict(columns, schema=schema)


class Output:
    """The output folder of a job: what it already holds, and a writer of new parts.

    Rows are buffered and written as one part every `part_rows` rows or `flush_s` seconds, whichever comes
    first, and on `flush()` (the job's end, or an interrupt): a job killed outright loses at most that much
    unwritten work, never a written part.
    """

    def __init__(self, uri: str, storage: Storage, schema: pa.Schema, part_rows: int = 5000, flush_s: float = 30.0):
        if part_rows < 1 or flush_s <= 0:
            raise BatchError(f"part_rows must be at least 1 and flush_s positive, got {part_rows} and {flush_s}")
        self.uri, self.schema, self.part_rows, self.flush_s = uri, schema, part_rows, flush_s
        self.fs, self.root = storage.resolve(uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self._run = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._last_flush = time.monotonic()
        self.parts_written = 0

    def prepare(self) -> None:
        """Create the folder if need be, and remove parts a killed process left half-written."""
        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.File:
            raise BatchError(f"{self.uri}: is a file; the output is a folder of Parquet parts")
        if info.type == pafs.FileType.NotFound:
            self.fs.create_dir(self.root, recursive=True)
        for stale in self._entries(STAGING_PREFIX):
            log.warning("%s: removing %s, a part whose writer was killed before it finished", self.uri, stale.base_name)
            self.fs.delete_file(stale.path)

    def done(self, bundle_id: str) -> set[str]:
        """The paths this output already has a row for from the bundle `bundle_id` (an answer or an error).

        Raises BatchError for a part that is not readable Parquet or whose columns are not this job's (the
        output of a bundle with other labels): one output folder is one table."""
        done: set[str] = set()
        for part in self._entries(PART_PREFIX):
            try:
                with self.fs.open_input_file(part.path) as f:
                    file = pq.ParquetFile(f)
                    if not file.schema_arrow.equals(self.schema, check_metadata=False):
                        raise BatchError(
                            f"{self.uri}: {part.base_name} has other columns than this bundle's answers "
                            f"({', '.join(file.schema_arrow.names)}); write to another output"
                        )
                    table = file.read(columns=["path", "bundle_id"])
            except (OSError, pa.ArrowInvalid) as e:
                raise BatchError(f"{self.uri}: {part.base_name} is not readable Parquet ({e}); move it away") from None
            paths, ids = table.column("path").to_pylist(), table.column("bundle_id").to_pylist()
            done.update(p for p, i in zip(paths, ids, strict=True) if i == bundle_id)
        return done

    def add(self, table: pa.Table) -> None:
        """Queue rows; a part is written once enough have come or enough time has passed."""
        if table.num_rows:
            self._pending.append(table)
            self._pending_rows += table.num_rows
        if self._pending_rows >= self.part_rows or time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Write every queued row as one part (nothing when none are queued)."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        name = f"{PART_PREFIX}{self._run}-{self.parts_written:05d}{PART_SUFFIX}"
        final = f"{self.root}/{name}"
        target = f"{self.root}/.{name}.tmp" if self.local else final
        with self.fs.open_output_stream(target) as f:
            pq.write_table(table, f)
        if self.local:
            self.fs.move(target, final)
        self.parts_written += 1
        self._pending, self._pending_rows = [], 0

    def read(self) -> pa.Table:
        """Every row written so far, as one table (for tests and small jobs)."""
        tables: Iterable[pa.Table] = (self._read_part(p.path) for p in self._entries(PART_PREFIX))
        return pa.concat_tables([self.schema.empty_table(), *tables])

    def _read_part(self, path: str) -> pa.Table:
        with self.fs.open_input_file(path) as f:
            return pq.read_table(f)

    def _entries(self, prefix: str) -> list[pafs.FileInfo]:
        if self.fs.get_file_info(self.root).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False))
        return sorted(
            (i for i in infos if i.type == pafs.FileType.File and i.base_name.startswith(prefix)),
            key=lambda i: i.base_name,
        )
