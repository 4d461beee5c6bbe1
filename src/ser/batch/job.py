"""A batch job on Ray Data: list → read and decode (tasks) → score (one model session per actor) → Parquet.

The driver lists the inputs, drops what the output already holds, and streams the rest through Ray Data;
the scored rows come back to the driver (a few hundred bytes a file), which writes them as Parquet parts
(`Output`) and reports progress. Per-file failures are rows with their reason — an exception in a Ray
Data function would end the whole job. A worker that dies is restarted by Ray and its batch retried; its
rows never reached the driver, so nothing is written twice.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ser.audio import AudioError, load_audio
from ser.batch.output import Output, result_schema, result_table
from ser.batch.storage import BatchError, Storage, list_inputs
from ser.bundle import MANIFEST_NAME, Bundle, BundleError

log = logging.getLogger(__name__)
READER_CPUS = 0.25  # what a read-and-decode task asks of Ray: a share small enough to run beside the model actors
MAX_FILE_BYTES = 1 << 30  # a file over 1 GiB is refused before it is read: no speech clip is that large
NODE_COLUMN, THREADS_COLUMN = "_node", "_threads"  # which node scored a row, on how many threads: for the summary


@dataclass(frozen=True)
class BatchOptions:
    """How a job runs. `actors` model actors of `cpus_per_actor` CPUs each (None: as the cluster allows, see
    `plan_actors`); each actor's ONNX Runtime uses as many threads as the CPUs Ray assigned it. `window`
    files go to an actor at a time, which answers them `batch_size` at a time, sorted by length."""

    backend: str = "auto"
    actors: int | None = None
    cpus_per_actor: float | None = None
    gpus_per_actor: float = 0.0
    batch_size: int = 8
    window: int = 64
    max_seconds: float = 60.0
    part_rows: int = 5000
    flush_s: float = 30.0
    address: str | None = None  # an existing Ray cluster ("auto", "ray://host:10001", ...); None: a local one
    storage: Storage = field(default_factory=Storage)


@dataclass(frozen=True)
class Progress:
    """Where a job stands: files answered or failed so far in this run, out of `total` to do."""

    total: int
    done: int = 0
    errors: int = 0
    audio_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def files_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def audio_hours_per_s(self) -> float:
        return self.audio_s / 3600 / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def describe(self) -> str:
        eta = (self.total - self.done) / self.files_per_s if self.files_per_s > 0 else math.inf
        return (
            f"{self.done:,}/{self.total:,} files · {self.files_per_s:.1f} files/s · "
            f"{self.audio_hours_per_s:.3f} audio h/s · {self.errors:,} errors"
            + (f" · {eta:.0f} s left" if math.isfinite(eta) else "")
        )


@dataclass(frozen=True)
class BatchSummary:
    """What a job did. `skipped`: files the output already had from this bundle (a resumed job);
    `first_rows_s`: from the call to the first scored rows (listing, Ray, actors, model load, the first window)."""

    source: str
    output: str
    bundle_id: str
    listed: int
    skipped: int
    scored: int
    errors: int
    audio_s: float
    wall_s: float
    first_rows_s: float
    actors: int
    cpus_per_actor: float
    threads_per_actor: int  # ONNX Runtime's threads in each model actor, from the CPUs Ray assigned it
    nodes: int
    parts_written: int
    interrupted: bool = False

    @property
    def files_per_s(self) -> float:
        return (self.scored + self.errors) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def audio_s_per_s(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "files_per_s": self.files_per_s, "audio_s_per_s": self.audio_s_per_s}

    def describe(self) -> str:
        if self.scored + self.errors == 0 and not self.interrupted:
            return f"nothing to do: all {self.listed:,} files are in {self.output} already (bundle {self.bundle_id})"
        verb = "interrupted after" if self.interrupted else "done:"
        return (
            f"{verb} {self.scored:,} files answered, {self.errors:,} errors, {self.skipped:,} already in "
            f"{self.output} · {self.audio_s / 3600:.2f} h of audio in {self.wall_s:.1f} s "
            f"({self.files_per_s:.1f} files/s, {self.audio_s_per_s:.1f} audio s/s; first rows after "
            f"{self.first_rows_s:.1f} s) · "
            f"{self.actors} actor(s) × {self.cpus_per_actor:g} CPU ({self.threads_per_actor} threads) "
            f"on {self.nodes} node(s)"
        )


def score_files(
    source: str,
    bundle: str | Path | Bundle,
    output: str,
    options: BatchOptions | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every_s: float = 5.0,
) -> BatchSummary:
    """Score every audio file `source` names (folder, glob, CSV/Parquet list; local or s3://) with `bundle`,
    writing Parquet rows to `output`; files it already holds from this bundle are skipped.

    The bundle is verified before any work (BundleError); a source, output or resource request that cannot
    work raises BatchError. Ctrl-C writes every answer received, then raises KeyboardInterrupt; rerunning the
    same call finishes the job.
    """
    options = options or BatchOptions()
    started = time.monotonic()
    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    storage = options.storage
    schema = result_schema(bundle.manifest.answer_spec)
    listed = list_inputs(source, storage)
    sink = Output(output, storage, schema, options.part_rows, options.flush_s)
    sink.prepare()
    done = sink.done(bundle.id)
    todo = [uri for uri in listed if uri not in done]
    summary = dict(
        source=source, output=output, bundle_id=bundle.id, listed=len(listed), skipped=len(listed) - len(todo)
    )
    if not todo:
        return BatchSummary(**summary, scored=0, errors=0, audio_s=0.0, wall_s=time.monotonic() - started,
                            first_rows_s=0.0, actors=0, cpus_per_actor=0.0, threads_per_actor=0, nodes=0,
                            parts_written=0)  # fmt: skip

    import ray

    started_ray = not ray.is_initialized()
    if started_ray:
        _start_ray(options.address or os.environ.get("RAY_ADDRESS"))  # inside a Ray job: that job's cluster
    progress = Progress(total=len(todo))
    nodes: set[str] = set()
    threads = 0
    interrupted, first_answer, failure = False, None, None
    try:
        actors, cpus = plan_actors(_node_resources(), options)
        dataset = _pipeline(ray, todo, bundle, options, actors, cpus)
        last_report = time.monotonic()
        run_started = time.monotonic()
        try:
            # prefetch_batches=0: a block is handed over as soon as it is scored, not once the next one is too
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
                first_answer = first_answer or time.monotonic()
                nodes.update(batch.column(NODE_COLUMN).unique().to_pylist())
                threads = max(threads, pc.max(batch.column(THREADS_COLUMN)).as_py())
                batch = batch.drop_columns([NODE_COLUMN, THREADS_COLUMN]).cast(schema)
                sink.add(batch)
                errors = batch.num_rows - batch.column("error").null_count
                durations = pc.sum(batch.column("duration_s")).as_py() or 0.0
                progress = Progress(
                    progress.total, progress.done + batch.num_rows, progress.errors + errors,
                    progress.audio_s + durations, time.monotonic() - run_started,
                )  # fmt: skip
                if on_progress and time.monotonic() - last_report >= progress_every_s:
                    on_progress(progress)
                    last_report = time.monotonic()
        except KeyboardInterrupt:
            interrupted = True
        except Exception as e:  # Ray's report of what stopped the job: model actors that cannot start, a lost node
            failure = e
        finally:
            sink.flush()  # every answer received is written, whatever ended the loop
    finally:
        if started_ray:
            ray.shutdown()
    if failure is not None:
        cause = str(failure).strip().splitlines()[-1] if str(failure).strip() else type(failure).__name__
        raise BatchError(
            f"the job stopped: {cause}; {progress.done:,} files were written first (rerun to resume)"
        ) from failure
    result = BatchSummary(
        **summary,
        scored=progress.done - progress.errors,
        errors=progress.errors,
        audio_s=progress.audio_s,
        wall_s=time.monotonic() - started,
        first_rows_s=(first_answer or time.monotonic()) - started,
        actors=actors,
        cpus_per_actor=cpus,
        threads_per_actor=threads,
        nodes=len(nodes),
        parts_written=sink.parts_written,
        interrupted=interrupted,
    )
    if interrupted:
        raise JobInterrupted(result)
    return result


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a job, after every answer received was written; `summary` says how far it got."""

    def __init__(self, summary: BatchSummary):
        super().__init__(summary.describe())
        self.summary = summary


def _start_ray(address: str | None) -> None:
    import ray

    quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if address is None:  # a private local instance on this machine's cores, gone when the job ends
        ray.init(num_cpus=os.cpu_count() or 1, **quiet)
    else:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BatchError(f"--address {address}: cannot join the Ray cluster: {e}") from None
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False  # the job reports its own progress
    context.print_on_execution_start = False


def _node_resources() -> list[tuple[float, float]]:
    """(CPUs, GPUs) of every live node of the cluster Ray is connected to."""
    import ray

    return [
        (float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0))) for n in ray.nodes() if n["Alive"]
    ]


def plan_actors(nodes: list[tuple[float, float]], options: BatchOptions) -> tuple[int, float]:
    """(actors, CPUs each) for a cluster of `nodes` ((CPUs, GPUs) each), leaving every node room for a reader.

    Unset, `cpus_per_actor` is the largest node's CPUs less a reader's share (or the cluster's CPUs shared
    among `actors`, if less); unset, `actors` is as many as fit. Raises BatchError when what is asked cannot
    all start, rather than leaving Ray to wait for it forever."""
    if not nodes:
        raise BatchError("the Ray cluster has no live nodes")
    room = [cpus - READER_CPUS for cpus, _ in nodes]
    biggest = max(room)
    cpus = options.cpus_per_actor
    if cpus is None:
        cpus = biggest if options.actors is None else min(biggest, sum(max(r, 0) for r in room) / options.actors)
        cpus = math.floor(cpus * 100) / 100  # Ray accounts resources to 1e-4; a round number reads better
    if cpus <= 0:
        raise BatchError(f"no node has CPUs to spare for a model actor beside a reader ({nodes})")

    def fit(cpu_room: float, gpus: float) -> int:
        by_cpu = math.floor(cpu_room / cpus + 1e-9)
        return min(by_cpu, math.floor(gpus / options.gpus_per_actor + 1e-9)) if options.gpus_per_actor else by_cpu

    capacity = sum(fit(r, g) for r, (_, g) in zip(room, nodes, strict=True))
    actors = options.actors if options.actors is not None else capacity
    if actors < 1 or actors > capacity:
        gpus = f" and {options.gpus_per_actor:g} GPU(s)" if options.gpus_per_actor else ""
        raise BatchError(
            f"{actors} model actor(s) of {cpus:g} CPU(s){gpus} each do not fit on this cluster (at most "
            f"{capacity}; nodes with (CPUs, GPUs) {nodes}, each keeping {READER_CPUS} CPU for reading)"
        )
    return actors, cpus


def _pipeline(ray: Any, todo: list[str], bundle: Bundle, options: BatchOptions, actors: int, cpus: float) -> Any:
    from ray.data import ActorPoolStrategy

    files = {name: (bundle.path / name).read_bytes() for name in [*bundle.manifest.files, MANIFEST_NAME]}
    shipped = [ray.put(files)]  # in a list, so the actors get the reference and fetch it once each
    # One block of `window` files is one read task and one actor call, and its rows reach the driver when that
    # call ends: a larger batch_size would bundle blocks into one long task whose rows all arrive at its end.
    blocks = max(1, math.ceil(len(todo) / options.window))
    return (
        ray.data.from_items([{"path": uri} for uri in todo], override_num_blocks=blocks)
        .map_batches(
            read_audio,
            fn_kwargs={"storage": options.storage, "max_seconds": options.max_seconds},
            batch_size=None,
            batch_format="pyarrow",
            num_cpus=READER_CPUS,
        )
        .map_batches(
            Scorer,
            fn_constructor_kwargs={
                "bundle_id": bundle.id,
                "shipped": shipped,
                "backend": options.backend,
                "batch_size": options.batch_size,
            },
            batch_size=None,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=actors),
            num_cpus=cpus,
            num_gpus=options.gpus_per_actor or None,
        )
    )


def read_audio(batch: pa.Table, storage: Storage, max_seconds: float) -> pa.Table:
    """Read and decode each file to mono float32 at 16 kHz (its samples as bytes), or its error."""
    samples: list[bytes | None] = []
    errors: list[str | None] = []
    for uri in batch.column("path").to_pylist():
        try:
            data = storage.read(uri, MAX_FILE_BYTES)
            samples.append(load_audio(data, name=uri, max_seconds=max_seconds).tobytes())
            errors.append(None)
        except AudioError as e:
            samples.append(None)
            errors.append(str(e))
        except (OSError, ValueError) as e:  # not there, no permission, the store refused, too large
            samples.append(None)
            errors.append(f"{uri}: cannot be read: {e}")
    return pa.table(
        {
            "path": batch.column("path"),
            "samples": pa.array(samples, pa.binary()),
            "error": pa.array(errors, pa.string()),
        }
    )


class Scorer:
    """A model actor: one EmotionRecognizer on as many threads as the CPUs Ray gave it, from the bundle's
    files as the driver shipped them (verified again on this node, written once per node and bundle)."""

    def __init__(self, bundle_id: str, shipped: list, backend: str, batch_size: int):
        import ray

        from ser.runtime.recognizer import EmotionRecognizer

        context = ray.get_runtime_context()
        self.threads = max(1, round(context.get_assigned_resources().get("CPU", 1)))
        self.recognizer = EmotionRecognizer.load(_materialize(bundle_id, shipped), backend, self.threads)
        self.node = context.get_node_id()
        self.bundle_id, self.batch_size = bundle_id, batch_size
        answer = self.recognizer.answer
        self.answer, self.schema = answer, result_schema(answer)

    def __call__(self, batch: pa.Table) -> pa.Table:
        paths = batch.column("path").to_pylist()
        results: list[Any] = batch.column("error").to_pylist()
        blobs = batch.column("samples").to_pylist()
        clips = {i: np.frombuffer(blobs[i], dtype=np.float32) for i, error in enumerate(results) if error is None}
        order = sorted(clips, key=lambda i: len(clips[i]))  # by length, so padding stays small
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            try:
                answers: list[Any] = self.recognizer.classify([clips[i] for i in chunk])
            except Exception:  # one clip's answer is not finite, or the batch as a whole failed: one by one
                answers = [self._alone(clips[i]) for i in chunk]
            for i, answer in zip(chunk, answers, strict=True):
                results[i] = answer if not isinstance(answer, Exception) else f"{paths[i]}: {answer}"
        table = result_table(self.schema, self.answer, paths, results, self.bundle_id)
        table = table.append_column(NODE_COLUMN, pa.array([self.node] * len(paths), pa.string()))
        return table.append_column(THREADS_COLUMN, pa.array([self.threads] * len(paths), pa.int32()))

    def _alone(self, clip: np.ndarray) -> Any:
        try:
            return self.recognizer.classify([clip])[0]
        except AudioError as e:
            return e
        except Exception as e:
            return RuntimeError(f"{type(e).__name__}: {e}")


def _materialize(bundle_id: str, shipped: list) -> Bundle:
    """The shipped bundle as a folder on this node: reused when a verified copy is there, else written whole
    (staged, then renamed) and verified."""
    import ray

    home = Path(tempfile.gettempdir()) / "ser-bundles" / bundle_id
    try:
        bundle = Bundle.load(home)
        if bundle.id == bundle_id:
            return bundle
    except BundleError:
        pass
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{bundle_id}-", dir=home.parent))
    try:
        for name, data in ray.get(shipped[0]).items():
            (staging / name).write_bytes(data)
        bundle = Bundle.load(staging)
        if bundle.id != bundle_id:
            raise BundleError(f"the bundle shipped as {bundle_id} arrived as {bundle.id}")
        shutil.rmtree(home, ignore_errors=True)
        try:
            os.replace(staging, home)
        except OSError:  # another actor on this node got there first: theirs is the same bundle
            return Bundle.load(home)
        return Bundle.load(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
