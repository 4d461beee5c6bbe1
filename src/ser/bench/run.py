"""Run a suite: export what the matrix needs, start one worker process per configuration, time them in
interleaved rounds, score them against labels and the PyTorch reference, and write the results folder.

Method: every configuration of one model is started (cold start measured), scored on the same
clips, then timed case by case (batch size × clip length): warm-up calls first, then rounds in
which each configuration runs once, in rotating order, until every one has `min_runs` samples and
the case's time budget is spent (or `max_runs`). Interleaving makes a burst of machine noise hit all
configurations alike instead of one. Models run one after another, so only one model's workers
hold memory at a time. A configuration that fails (a backend missing here, an export that misses its
gate, a crash) is recorded with its error and the run goes on.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ser.answer import DIMENSIONS
from ser.bench.environment import environment
from ser.bench.results import Accuracy, Case, Cold, ConfigResult, Memory, Results, speedups
from ser.bench.suite import PRECISIONS, Config, ModelEntry, Suite
from ser.labels import truth_indices
from ser.metrics import Agreement, classification_metrics, regression_metrics
from ser.staging import StagedFolder

if TYPE_CHECKING:
    from ser.export import FloatGraphs

LOAD_TIMEOUT_S = 1800  # a torch.compile of a large model on a small CPU takes many minutes
CALL_TIMEOUT_S = 900
SYNTHETIC_CLIPS = 20  # agreement clips when a suite has no data


class WorkerError(RuntimeError):
    """A configuration's worker failed to start, answered with an error, or died."""


class Worker:
    """The parent's handle on one worker process (ser.bench.worker): JSON lines in, JSON lines out."""

    def __init__(self, spec: dict[str, Any], log_path: Path):
        self.log_path = log_path
        env = os.environ | {name: str(spec["threads"]) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        with open(log_path, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ser.bench.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            )
        self.ready = self.ask(spec, LOAD_TIMEOUT_S)

    def ask(self, message: dict[str, Any], timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """Send one message (the first is the configuration), wait for its reply."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(self._died()) from None
        readable, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        if not readable:
            self.close()
            raise WorkerError(f"no answer to {message.get('cmd', 'start')!r} within {timeout_s:.0f} s")
        line = self.process.stdout.readline()
        if not line:
            raise WorkerError(self._died())
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(reply["error"])
        return reply

    def _died(self) -> str:
        code = self.process.wait(timeout=30)
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
        return f"worker exited with code {code}: {' | '.join(tail) or 'no output'}"

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write('{"cmd": "exit"}\n')
                self.process.stdin.flush()
                self.process.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def eval_clips(suite: Suite, work: Path) -> list[dict[str, Any]]:
    """The clips every configuration answers: a seeded sample of `data.clips` from the split's test part
    (or the whole corpus; for `data.dimensions`, the ratings CSV, each clip with its `ratings`), in a fixed
    order; without data, synthetic speech-like clips with no label (agreement with the reference only)."""
    if suite.data is None:
        import soundfile as sf

        from ser.audio import SAMPLE_RATE
        from ser.data.signals import synthetic_voice

        (work / "clips").mkdir()
        clips = []
        for index in range(SYNTHETIC_CLIPS):
            path = work / "clips" / f"synthetic_{index:02d}.wav"
            sf.write(path, synthetic_voice(SAMPLE_RATE * (1 + index % 4), seed=1000 + index), SAMPLE_RATE)
            clips.append({"path": str(path), "label": None})
        return clips
    from ser.data.corpus import Corpus, Split, read_ratings

    data = suite.data
    if data.dimensions:
        rated = sorted(read_ratings(data.path, data.dimensions), key=lambda c: str(c.path))
        if len(rated) > data.clips:
            rated = [rated[i] for i in sorted(np.random.default_rng(0).choice(len(rated), data.clips, replace=False))]
        return [{"path": str(c.path), "label": None, "ratings": dict(zip(data.dimensions, c.values, strict=True))}
                for c in rated]  # fmt: skip
    labelled = Split.load(data.split, data.path).test if data.split else Corpus.from_path(data.path).clips
    labelled = sorted(labelled, key=lambda c: str(c.path))
    if len(labelled) > data.clips:
        keep = np.random.default_rng(0).choice(len(labelled), data.clips, replace=False)
        labelled = [labelled[i] for i in sorted(keep)]
    return [{"path": str(c.path), "label": c.label} for c in labelled]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def unavailable(config: Config) -> str | None:
    """Why `config`'s backend cannot run on this machine, found before anything is exported for it: the
    runtime's own check for the runtime's backends."""
    if config.backend.startswith("pytorch"):
        import torch

        if config.device == "cuda" and not torch.cuda.is_available():
            return "backend unavailable here: torch sees no CUDA device"
        return None
    if config.backend == "openvino":
        from ser.bench.peers import unavailable_reason

        reason = unavailable_reason()
    else:
        from ser.runtime.recognizer import backend_problem

        reason = backend_problem(config.backend)
    return f"backend unavailable here: {reason}" if reason else None


def export_for(
    suite: Suite, model: ModelEntry, precision: str, tensorrt: bool, audio: Path, out: Path, graphs: FloatGraphs
) -> dict[str, Any]:
    """Export `model` at `precision` into `out` the way ser-export would (with `tensorrt`, as `--trt`: the
    plain graph and a plan covering the suite's batches and lengths), with `audio` for INT8 calibration
    and its gate, from the float graph `graphs` holds for it (traced on first use); the record says how
    it went."""
    from ser.export import ExportOptions, Gate, Int8Options, export_bundle
    from ser.export.exporter import TensorRTOptions

    random_init = model.checkpoint is None
    settings = suite.export
    gate = Gate() if settings.gate and not random_init else Gate(min_agreement=0.0, max_f1_drop=None)
    start = time.perf_counter()
    try:
        options = ExportOptions(
            model.model,
            checkpoint=model.checkpoint,
            size=model.size,
            random_init=random_init,
            optimize=settings.optimize and not tensorrt,
            fp16=precision == "fp16",
            int8=Int8Options(precision.removeprefix("int8-"), symmetric=tensorrt) if "int8" in precision else None,
            calibration_data=str(audio) if precision == "int8-static" else None,
            eval_data=str(audio),
            calibration_clips=settings.calibration_clips,
            eval_clips=settings.eval_clips,
            gate=gate,
            trt=TensorRTOptions(
                max_batch=max(suite.batch_sizes), min_seconds=min(0.5, *suite.durations),
                max_seconds=max(30.0, *suite.durations),
            ) if tensorrt else None,
        )  # fmt: skip
        bundle = export_bundle(options, out, overwrite=True, graph=graphs.get(options))
    except Exception as error:  # recorded; the configurations that need this graph are reported failed
        return {"error": f"export failed: {type(error).__name__}: {error}"}
    quantization = bundle.manifest.quantization
    return {
        "bundle": str(out),
        "export_s": time.perf_counter() - start,
        "max_abs_logit_error": bundle.manifest.validation.get("max_abs_logit_error"),
        "fp32_nodes": len(quantization.get("fp32_nodes", [])) if precision.startswith("int8") else None,
        "gate_backends": quantization.get("gate_backends"),  # INT8: the CPU engines its gate passed it on
    }


def peer_export_for(suite: Suite, model: ModelEntry, precision: str, audio: Path, out: Path) -> dict[str, Any]:
    """OpenVINO IR of `model` at `precision` (ser.bench.peers), calibrated on `audio` like ser's static INT8."""
    from ser.bench.peers import export_openvino

    start = time.perf_counter()
    try:
        record = export_openvino(
            model.model, model.checkpoint, model.size, precision, audio, suite.export.calibration_clips, out
        )
    except Exception as error:  # recorded like a failed ONNX export
        return {"error": f"export failed: {type(error).__name__}: {error}"}
    return {"bundle": str(out), "export_s": time.perf_counter() - start, **record}


class SuiteRun:
    """One run of a suite into a staging folder; `run()` returns the results that results.json holds."""

    def __init__(self, suite: Suite, work: Path, progress=None):
        self.suite = suite
        self.work = work
        self.progress = progress  # a rich Progress, or None
        self.clips = eval_clips(suite, work)
        self.task = None

    def run(self) -> Results:
        started = time.time()
        configs = self.suite.configs()
        if self.progress is not None:
            total = len(configs) * (len(self.suite.cases()) + 1)
            self.task = self.progress.add_task(self.suite.name, total=total)
        records = []
        for model in self.suite.models:
            records += self._run_model(model, [c for c in configs if c.model == model])
        return Results(
            suite=_suite_record(self.suite),
            environment=environment(),
            started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            wall_s=time.time() - started,
            clips=tuple(self.clips),
            configs=tuple(score(records, self.clips)),
        )

    def _advance(self, description: str, steps: int = 1) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=steps, description=description)

    def _run_model(self, model: ModelEntry, configs: list[Config]) -> list[dict[str, Any]]:
        """Export what the configurations need, then start their workers and time every case across them,
        reading each worker's memory before it closes. With `timing.workers`, the configurations run in
        groups of that many (by precision), each group with the reference (kept alive throughout) in its
        rounds. A configuration that cannot run keeps its record with the reason."""
        missing = {c.key: reason for c in configs if (reason := unavailable(c))}
        exports = self._export(model, [c for c in configs if c.needs_export and c.key not in missing])
        records = {c.key: _config_record(c) for c in configs}
        runnable = []
        for config in configs:
            problem = missing.get(config.key)
            if problem is None and config.needs_export:
                records[config.key]["export"] = dict(exports[config.export_key])
                problem = records[config.key]["export"].get("error")
            if problem is not None:
                records[config.key]["error"] = problem
                self._advance(config.key, 1 + len(self.suite.cases()))
            else:
                runnable.append(config)
        references = [c for c in runnable if c.is_reference]  # one per thread count
        # In groups, rows of one precision go together, static INT8 first: ser's INT8 bundles and the
        # peers the report judges them against then share rounds, and so the same reference samples.
        others = sorted((c for c in runnable if not c.is_reference), key=lambda c: -PRECISIONS.index(c.precision))
        size = self.suite.timing.workers or len(others) or 1
        groups = [others[i : i + size] for i in range(0, len(others), size)] or [[]]
        grouped = len(groups) > 1
        with ExitStack() as cleanup:
            kept = self._start_all(references, records, cleanup)
            for group in groups:
                with ExitStack() as group_cleanup:
                    workers = kept | self._start_all(group, records, group_cleanup)
                    shared = {records[key]["threads"]: key for key in kept} if grouped else None
                    for batch, seconds in self.suite.cases():
                        self._time_case(batch, seconds, workers, records, shared)
                    self._read_memory({k: w for k, w in workers.items() if k not in kept}, records)
                kept = {k: w for k, w in kept.items() if k in workers}  # a reference that died stays gone
            self._read_memory(kept, records)
        if grouped:  # the references' rounds were not counted with any group
            self._advance("references", len(references) * len(self.suite.cases()))
        return list(records.values())

    def _start_all(self, configs: list[Config], records: dict, cleanup: ExitStack) -> dict[str, Worker]:
        """key → worker for each of `configs` that started, each closed by `cleanup`."""
        workers = {}
        for config in configs:
            self._advance(f"{config.key}: starting", 0)
            worker = self._start(config, records[config.key])
            if worker is not None:
                cleanup.callback(worker.close)
                workers[config.key] = worker
            self._advance(config.key)
        return workers

    @staticmethod
    def _read_memory(workers: dict[str, Worker], records: dict) -> None:
        for key, worker in workers.items():
            try:
                records[key]["memory"] = worker.ask({"cmd": "memory"})
            except WorkerError as error:
                records[key]["error"] = str(error)

    def _export(self, model: ModelEntry, configs: list[Config]) -> dict[tuple[str, str], dict[str, Any]]:
        """(precision, kind) → the export's record, each exported once for all the configurations that run it."""
        from ser.export import FloatGraphs  # torch, like everything that exports

        exports: dict[tuple[str, str], dict[str, Any]] = {}
        audio = self.suite.data.path if self.suite.data else self.work / "clips"
        with tempfile.TemporaryDirectory(prefix="ser-bench-graphs-") as graphs:
            shared = FloatGraphs(Path(graphs))  # each precision starts from the same traced graph
            for precision, kind in dict.fromkeys(c.export_key for c in configs):
                suffix = "" if kind == "onnx" else f"-{kind}"
                self._advance(f"{model.key}: exporting {precision}{'' if kind == 'onnx' else f' ({kind})'}", 0)
                out = self.work / "bundles" / slug(f"{model.key}-{precision}{suffix}")
                if kind == "openvino":
                    exports[precision, kind] = peer_export_for(self.suite, model, precision, audio, out)
                else:
                    tensorrt = kind == "tensorrt"
                    exports[precision, kind] = export_for(self.suite, model, precision, tensorrt, audio, out, shared)
        return exports

    def _start(self, config: Config, record: dict[str, Any]) -> Worker | None:
        """The configuration's worker, loaded and warmed once (its cold start recorded), with the scored clips'
        logits read; None with the record's error when it could not start."""
        spec = {
            **asdict(config.model),
            "backend": config.backend,
            "precision": config.precision,
            "device": config.device,
            "threads": config.threads,
            "bundle": record.get("export", {}).get("bundle"),
            "cold_case": [min(self.suite.batch_sizes), min(self.suite.durations)],
        }
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        worker = None
        try:
            worker = Worker(spec, logs / f"{slug(config.key)}.log")
            ready = worker.ready
            record |= {
                "cold": {"load_s": ready["load_s"], "first_s": ready["first_s"]},
                "labels": ready["labels"],
                "answer": ready["answer"],
                "bytes": ready["bytes"],
            }
            if self.clips:
                record["logits"] = worker.ask({"cmd": "logits", "clips": [c["path"] for c in self.clips]})["logits"]
            return worker
        except WorkerError as error:
            if worker is not None:
                worker.close()
            record["error"] = str(error)
            self._advance(config.key, len(self.suite.cases()))
            return None

    def _time_case(
        self, batch: int, seconds: float, workers: dict[str, Worker], records: dict,
        references: dict[int, str] | None = None,
    ) -> None:  # fmt: skip
        """Time one case across `workers` in interleaved rounds, adding to each record's samples; with
        `references` (threads → the reference's key, when the model's workers run in groups), each other
        record keeps its reference's samples from these rounds for its speed-up. A worker that fails is
        closed and dropped from `workers`."""
        timing = self.suite.timing
        case = {"cmd": "time", "batch": batch, "seconds": seconds}
        samples: dict[str, list[float]] = {key: [] for key in workers}

        def ask(key: str, message: dict[str, Any]) -> dict[str, Any] | None:
            try:
                return workers[key].ask(message)
            except WorkerError as error:
                records[key]["error"] = f"batch {batch}, {seconds:g} s: {error}"
                workers.pop(key).close()
                return None

        for key in list(workers):
            self._advance(f"batch {batch} × {seconds:g} s: warming up", 0)
            ask(key, {**case, "cmd": "warmup", "runs": timing.warmup})
        start, rounds = time.perf_counter(), 0
        while workers and rounds < timing.max_runs:
            if rounds >= timing.min_runs and time.perf_counter() - start >= timing.seconds:
                break
            keys = list(workers)
            for key in keys[rounds % len(keys) :] + keys[: rounds % len(keys)]:
                if key in workers and (reply := ask(key, case)) is not None:
                    samples[key].append(reply["s"])
            rounds += 1
        for key, values in samples.items():
            if not values:
                continue
            cases = records[key]["cases"]
            entry = next((c for c in cases if (c["batch"], c["seconds"]) == (batch, seconds)), None)
            if entry is None:
                entry = {"batch": batch, "seconds": seconds, "samples_s": []}
                cases.append(entry)
            entry["samples_s"] += values
            reference = (references or {}).get(records[key]["threads"])
            if reference is not None and key != reference and samples.get(reference):
                entry["reference_samples_s"] = samples[reference]
        counted = [key for key in samples if key not in (references or {}).values()]
        self._advance(f"batch {batch} × {seconds:g} s: {rounds} rounds", len(counted))


def score(records: list[dict[str, Any]], clips: list[dict[str, Any]]) -> list[ConfigResult]:
    """The run's records (what each worker reported) as typed results: every case's speed-up over its
    reference (the PyTorch eager FP32 record of the same model and threads), accuracy against the labels
    and agreement with the reference's logits."""
    configs = speedups([_typed(record) for record in records])
    references = {(c.model_key, c.threads): c for c in configs if c.reference}
    scored = []
    for config in configs:
        if config.logits is None:
            scored.append(config)
            continue
        labels, logits = config.labels, np.asarray(config.logits)
        accuracy = agreement = rated = None
        dimensions = config.answer == DIMENSIONS
        truth = np.array(truth_indices([c["label"] for c in clips], labels) if clips else [])
        known = truth >= 0  # clips of an emotion the model has no label for: no accuracy to score
        if clips and all(c["label"] is not None for c in clips) and not dimensions and known.any():
            metrics = classification_metrics(truth[known], logits.argmax(axis=1)[known], labels)
            accuracy = Accuracy(metrics.accuracy, metrics.macro_f1, metrics.f1)
        if dimensions and clips and all(set(c.get("ratings") or ()) >= set(labels) for c in clips):
            truth = [[c["ratings"][name] for name in labels] for c in clips]
            rated = regression_metrics(np.array(truth), logits, labels)
        reference = references.get((config.model_key, config.threads))
        if reference is not None and reference.logits is not None:
            order = [reference.labels.index(label) for label in labels]
            agreement = Agreement.of(np.asarray(reference.logits)[:, order], logits, dimensions=dimensions)
        scored.append(replace(config, accuracy=accuracy, agreement=agreement, rated=rated))
    return scored


def _typed(record: dict[str, Any]) -> ConfigResult:
    """One worker's record as a ConfigResult: an unknown or renamed key is a TypeError here, not a blank column."""
    cold, memory, logits = record.get("cold"), record.get("memory"), record.get("logits")
    return ConfigResult(
        **{key: value for key, value in record.items() if key not in ("cases", "labels", "cold", "memory", "logits")},
        cases=tuple(Case.from_json(c) for c in record["cases"]),
        labels=tuple(record.get("labels", ())),
        logits=None if logits is None else tuple(tuple(row) for row in logits),
        cold=None if cold is None else Cold(**cold),
        memory=None if memory is None else Memory(**memory),
    )


def _config_record(config: Config) -> dict[str, Any]:
    return {
        "key": config.key,
        "model_key": config.model.key,
        **asdict(config.model),
        "backend": config.backend,
        "precision": config.precision,
        "threads": config.threads,
        "device": config.device,
        "reference": config.is_reference,
        "error": None,
        "cases": [],
    }


def _suite_record(suite: Suite) -> dict[str, Any]:
    record = asdict(suite)
    record["path"] = str(suite.path)
    if suite.data is not None:
        record["data"] = {k: str(v) if isinstance(v, Path) else v for k, v in record["data"].items()}
    return record


def run_suite(suite: Suite, out: str | Path, overwrite: bool = False, progress=None) -> Results:
    """Run `suite` and write results.json, results.csv, report.md and the plots into the folder `out`
    (staged: an interrupted run leaves no half-written folder behind)."""
    from ser.bench.report import write_outputs

    with StagedFolder(out, overwrite=overwrite) as staged:
        assert staged.dir is not None
        results = SuiteRun(suite, staged.dir, progress).run()
        results = _relative_paths(results, staged.dir)
        write_outputs(results, staged.dir)
        staged.commit()
    return results


def _relative_paths(results: Results, root: Path) -> Results:
    """Paths inside the results folder (bundles, synthetic clips) made relative to it, so they stay true
    after the staging folder is renamed into place."""

    def inside(path: str) -> str:
        return os.path.relpath(path, root) if Path(path).is_relative_to(root) else path

    configs = tuple(
        replace(c, export={**c.export, "bundle": os.path.relpath(c.export["bundle"], root)})
        if c.export and "bundle" in c.export
        else c
        for c in results.configs
    )
    clips = tuple({**clip, "path": inside(str(clip["path"]))} for clip in results.clips)
    return replace(results, configs=configs, clips=clips)
