"""Where a batch job's audio and results live: local paths or `s3://` (any S3-compatible endpoint), through
pyarrow's file systems, so the driver and every Ray worker read and write them the same way.

A job's inputs are named by one source: a folder (every audio file under it), a glob (`**` crosses
folders, `*` and `?` do not), a CSV or Parquet list with a `path` column, or one audio file.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from functools import cached_property

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ser.data.corpus import AUDIO_EXTENSIONS

LIST_SUFFIXES = (".csv", ".parquet")
LIST_COLUMNS = ("path", "uri")  # the column of a list that names the files, by the first of these it has
GLOB_CHARS = re.compile(r"[*?\[]")


class BatchError(ValueError):
    """A batch job that cannot run as asked (its source, output or resources): the message names what and why."""


@dataclass(frozen=True)
class Storage:
    """How to reach `s3://` URIs (`s3_endpoint`: an S3-compatible server such as MinIO; None: AWS, or what
    `AWS_ENDPOINT_URL` says). Credentials come from each machine's usual chain (environment, profile, role).
    Picklable: Ray ships it to the readers, which open their own connections."""

    s3_endpoint: str | None = None
    s3_region: str | None = None

    def resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """The file system that holds `uri`, and the path within it."""
        if uri.startswith("s3://"):
            return self._s3, uri.removeprefix("s3://").rstrip("/")
        if "://" in uri:
            raise BatchError(f"{uri}: only local paths and s3:// URIs are supported")
        return pafs.LocalFileSystem(), os.path.abspath(uri)

    @cached_property
    def _s3(self) -> pafs.S3FileSystem:
        region = self.s3_region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
        options = {"region": region} if region else {}
        if self.s3_endpoint:
            options["endpoint_override"] = self.s3_endpoint
        return pafs.S3FileSystem(**options)

    def uri(self, uri_or_path: str, path: str) -> str:
        """`path` (from a listing) as a URI of the same kind as `uri_or_path`."""
        return f"s3://{path}" if uri_or_path.startswith("s3://") else path

    def read(self, uri: str, max_bytes: int) -> bytes:
        """A file's bytes; OSError where it cannot be read, ValueError where it is over `max_bytes`."""
        fs, path = self.resolve(uri)
        with fs.open_input_file(path) as f:
            size = f.size()
            if size > max_bytes:
                raise ValueError(f"{size / 2**20:.0f} MiB is over the limit of {max_bytes / 2**20:.0f} MiB a file")
            return f.read()


def list_inputs(source: str, storage: Storage) -> list[str]:
    """Every audio file `source` names, as URIs (local ones absolute), each once, in a stable order.

    A folder or glob is listed with sizes and ordered by size, so neighbouring files have similar lengths and
    the model's padded batches stay short; a list keeps its own order. Raises BatchError for a source that is
    not there, a list without a path column, or one that names nothing.
    """
    if GLOB_CHARS.search(source):
        uris = _glob(source, storage)
    else:
        fs, path = storage.resolve(source)
        info = _info(fs, path, source)
        if info.type == pafs.FileType.Directory:
            uris = _listed(fs, pafs.FileSelector(path, recursive=True), source, storage, lambda p: True)
        elif path.lower().endswith(LIST_SUFFIXES):
            uris = _read_list(fs, path, source, storage)
        else:
            uris = [storage.uri(source, path)]
    if not uris:
        raise BatchError(f"{source}: no audio files found ({', '.join(sorted(AUDIO_EXTENSIONS))})")
    return list(dict.fromkeys(uris))


def _info(fs: pafs.FileSystem, path: str, source: str) -> pafs.FileInfo:
    try:
        info = fs.get_file_info(path)
    except OSError as e:
        raise BatchError(f"{source}: cannot be reached: {e}") from None
    if info.type == pafs.FileType.NotFound:
        raise BatchError(f"{source}: no such file or folder")
    return info


def _glob(source: str, storage: Storage) -> list[str]:
    fs, pattern = storage.resolve(source)
    base = pattern[: GLOB_CHARS.search(pattern).start()].rpartition("/")[0] or "/"  # type: ignore[union-attr]
    if _info(fs, base, source).type != pafs.FileType.Directory:
        raise BatchError(f"{source}: {base} is not a folder")
    matches = re.compile(glob_regex(pattern)).fullmatch
    return _listed(fs, pafs.FileSelector(base, recursive=True), source, storage, lambda p: matches(p) is not None)


def glob_regex(pattern: str) -> str:
    """A glob as a regular expression over whole paths: `**/` is any number of folders, `**` anything,
    `*` and `?` stay within one folder, `[...]` is a character class."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def _listed(fs: pafs.FileSystem, selector: pafs.FileSelector, source: str, storage: Storage, keep) -> list[str]:
    try:
        infos = fs.get_file_info(selector)
    except OSError as e:
        raise BatchError(f"{source}: cannot be listed: {e}") from None
    files = [
        info
        for info in infos
        if info.type == pafs.FileType.File
        and os.path.splitext(info.path)[1].lower() in AUDIO_EXTENSIONS
        and not os.path.basename(info.path).startswith(".")
        and keep(info.path)
    ]
    files.sort(key=lambda info: (info.size, info.path))
    return [storage.uri(source, info.path) for info in files]


def _read_list(fs: pafs.FileSystem, path: str, source: str, storage: Storage) -> list[str]:
    try:
        if path.lower().endswith(".csv"):
            with fs.open_input_stream(path) as f:
                table = pa_csv.read_csv(
                    f, convert_options=pa_csv.ConvertOptions(column_types={c: pa.string() for c in LIST_COLUMNS})
                )
        else:
            with fs.open_input_file(path) as f:
                table = pq.read_table(f)
    except (OSError, pa.ArrowInvalid) as e:
        raise BatchError(f"{source}: not a readable list of files: {e}") from None
    column = next((c for c in LIST_COLUMNS if c in table.column_names), None)
    if column is None:
        raise BatchError(
            f"{source}: a list needs a {' or '.join(repr(c) for c in LIST_COLUMNS)} column naming the files; it has "
            f"{', '.join(table.column_names) or 'none'}"
        )
    folder = posixpath.dirname(path)
    uris = []
    for entry in table.column(column).to_pylist():
        if not entry:
            continue
        if "://" in entry:
            uris.append(entry)
        elif os.path.isabs(entry):
            uris.append(os.path.normpath(entry))
        else:  # relative to the list, so a folder and its list move as one
            uris.append(storage.uri(source, posixpath.normpath(posixpath.join(folder, entry))))
    return uris
