"""A benchmark suite: the YAML file that declares the matrix, read into checked, expanded configurations.

Every key is checked against what it may hold, and an error names the file and the key path
(`models[1].size`), so a typo in a 40-line suite is found before an hour-long run starts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ser.models.checkpoint import CheckpointError, detect
from ser.models.registry import REGISTRY

# backend name → (precisions it runs, the device it runs on; None: the suite's `device`). The ONNX Runtime,
# OpenVINO (openvino-cpu) and TensorRT names are the runtime's own (ser.runtime.recognizer.BACKENDS); a test
# keeps them equal.
BACKENDS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "pytorch-eager": (("fp32", "fp16", "int8-dynamic"), None),  # int8-dynamic: quantize_dynamic, CPU only
    "pytorch-compile": (("fp32", "fp16"), None),
    "onnxruntime-cpu": (("fp32", "fp16", "int8-dynamic", "int8-static"), "cpu"),
    "onnxruntime-cuda": (("fp32", "fp16", "int8-dynamic", "int8-static"), "cuda"),
    "onnxruntime-tensorrt": (("fp32", "fp16", "int8-static"), "tensorrt"),  # ONNX Runtime's TensorRT provider
    "tensorrt": (("fp32", "fp16", "int8-static"), "cuda"),  # the bundle's own plan (ser-export --trt)
    "openvino-cpu": (("fp32", "fp16", "int8-dynamic", "int8-static"), "cpu"),  # ser's bundle on OpenVINO
    "openvino": (("fp32", "int8-static"), "cpu"),  # a peer: OpenVINO IR, INT8 by NNCF (ser.bench.peers)
}
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")
DEVICES = ("cpu", "cuda")  # where the PyTorch backends run
REFERENCE = ("pytorch-eager", "fp32")  # every row's speed-up and agreement are against this


class SuiteError(ValueError):
    """A suite file that cannot be run: the message names the file, the key and what it must hold."""


@dataclass(frozen=True)
class ModelEntry:
    model: str
    size: str | None = None  # random weights at this size (speed does not depend on the weights)
    checkpoint: str | None = None  # a trained run folder or hub id

    @property
    def key(self) -> str:
        return f"{self.model}:{self.size or self.checkpoint}"


@dataclass(frozen=True)
class Data:
    path: Path
    split: Path | None = None  # a training run's split.json: only its test part is scored
    clips: int = 100
    # dimensional models: `path` is a CSV of path and these rated dimensions (path,arousal,dominance,valence)
    dimensions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Timing:
    warmup: int = 2
    min_runs: int = 5
    max_runs: int = 50
    seconds: float = 10.0  # per batch × duration case, shared by all its configurations
    # At most this many of a model's configurations alive at once, besides the reference (None: all): a large
    # model's workers do not all fit in memory. Each group is timed in rounds with the reference, and its
    # speed-ups are against the reference's samples from those same rounds.
    workers: int | None = None


@dataclass(frozen=True)
class ExportSettings:
    optimize: bool = True
    calibration_clips: int = 50
    eval_clips: int = 300  # disjoint from the calibration clips; the default gate needs 299
    gate: bool = True  # the INT8 accuracy gate of ser-export; always open for random weights


@dataclass(frozen=True)
class Config:
    """One thing timed: a model run by one backend at one precision with one thread count."""

    model: ModelEntry
    backend: str
    precision: str
    threads: int
    device: str

    @property
    def key(self) -> str:
        return f"{self.model.key}/{self.backend}/{self.precision}/t{self.threads}"

    @property
    def is_reference(self) -> bool:
        return (self.backend, self.precision) == REFERENCE

    @property
    def needs_export(self) -> bool:
        return not self.backend.startswith("pytorch")

    @property
    def export_key(self) -> tuple[str, str]:
        """Configurations that can share one export: the same precision and kind (an ONNX bundle, one with a
        TensorRT plan, or OpenVINO IR)."""
        return self.precision, self.backend if self.backend in ("tensorrt", "openvino") else "onnx"


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    description: str
    device: str
    models: tuple[ModelEntry, ...]
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    durations: tuple[float, ...]
    threads: tuple[int, ...]
    data: Data | None
    timing: Timing = field(default_factory=Timing)
    export: ExportSettings = field(default_factory=ExportSettings)

    def configs(self) -> list[Config]:
        """The matrix, expanded: models × backends × precisions × threads, skipping pairs a backend cannot
        run (PyTorch's dynamic INT8 only on the CPU, and FP16 autocast only on CUDA), with the PyTorch eager FP32
        reference always present."""
        configs = []
        for model, threads in itertools.product(self.models, self.threads):
            pairs = [
                (b, p)
                for b in self.backends
                for p in self.precisions
                if p in BACKENDS[b][0]
                and not (b.startswith("pytorch") and p == "fp16" and self.device == "cpu")
                and not (b.startswith("pytorch") and p == "int8-dynamic" and self.device != "cpu")
            ]
            if REFERENCE not in pairs:
                pairs.insert(0, REFERENCE)
            for backend, precision in pairs:
                configs.append(Config(model, backend, precision, threads, BACKENDS[backend][1] or self.device))
        return configs

    def cases(self) -> list[tuple[int, float]]:
        """(batch size, clip seconds) pairs each configuration is timed on."""
        return list(itertools.product(self.batch_sizes, self.durations))


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{path}: no such suite file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SuiteError(f"{path}: not valid YAML: {error}") from error
    return parse_suite(raw, path)


def parse_suite(raw: Any, path: Path) -> Suite:
    reader = _Reader(path)
    top = reader.mapping(raw, "", required={"models", "backends"}, optional=_TOP_KEYS)
    device = reader.choice(top.get("device", "cpu"), "device", DEVICES)
    backends = tuple(reader.choice(b, f"backends[{i}]", BACKENDS) for i, b in enumerate(reader.list(top, "backends")))
    precisions = tuple(
        reader.choice(p, f"precisions[{i}]", PRECISIONS)
        for i, p in enumerate(reader.list(top, "precisions", default=["fp32"]))
    )
    models = tuple(reader.model(m, f"models[{i}]") for i, m in enumerate(reader.list(top, "models")))
    data = None
    if "data" in top:
        d = reader.mapping(top["data"], "data", required={"path"}, optional={"path", "split", "clips", "dimensions"})
        dimensions = tuple(str(n) for n in reader.list(d, "dimensions")) if "dimensions" in d else ()
        if dimensions and "split" in d:
            raise reader.fail("data.split", "a ratings CSV (data.dimensions) is scored whole: leave out the split")
        data = Data(
            path=reader.path(d["path"], "data.path"),
            split=reader.path(d["split"], "data.split") if "split" in d else None,
            clips=reader.number(d.get("clips", 100), "data.clips", int, minimum=1),
            dimensions=dimensions,
        )
    timing_raw = reader.mapping(top.get("timing", {}), "timing", optional=set(Timing.__dataclass_fields__))
    timing = Timing(
        **{
            key: reader.number(
                value,
                f"timing.{key}",
                float if key == "seconds" else int,
                minimum=0 if key in ("warmup", "seconds") else 1,
            )
            for key, value in timing_raw.items()
        }
    )
    if timing.min_runs > timing.max_runs:
        raise SuiteError(f"{path}: timing.min_runs ({timing.min_runs}) is above timing.max_runs ({timing.max_runs})")
    export_raw = reader.mapping(top.get("export", {}), "export", optional=set(ExportSettings.__dataclass_fields__))
    export = ExportSettings(
        **{
            key: reader.boolean(value, f"export.{key}")
            if key in ("optimize", "gate")
            else reader.number(value, f"export.{key}", int, minimum=1)
            for key, value in export_raw.items()
        }
    )
    return Suite(
        name=str(top.get("name", path.stem)),
        path=path,
        description=str(top.get("description", "")).strip(),
        device=device,
        models=models,
        backends=backends,
        precisions=precisions,
        batch_sizes=tuple(
            reader.number(b, f"batch_sizes[{i}]", int, minimum=1)
            for i, b in enumerate(reader.list(top, "batch_sizes", default=[1]))
        ),
        durations=tuple(
            reader.number(s, f"durations[{i}]", float, minimum=0.1)
            for i, s in enumerate(reader.list(top, "durations", default=[4.0]))
        ),
        threads=tuple(
            reader.number(t, f"threads[{i}]", int, minimum=1)
            for i, t in enumerate(reader.list(top, "threads", default=[2]))
        ),
        data=data,
        timing=timing,
        export=export,
    )


_TOP_KEYS = {
    "name", "description", "device", "models", "backends", "precisions", "batch_sizes", "durations", "threads",
    "data", "timing", "export",
}  # fmt: skip


class _Reader:
    """Typed access to the parsed YAML; every failure raises SuiteError with the file and key path."""

    def __init__(self, file: Path):
        self.file = file

    def fail(self, key: str, message: str) -> SuiteError:
        return SuiteError(f"{self.file}: {key or 'the top level'}: {message}")

    def mapping(self, value: Any, key: str, required: set[str] = frozenset(), optional: set[str] = frozenset()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping of keys to values, got {type(value).__name__}")
        prefix = f"{key}." if key else ""
        for name in value:
            if name not in required | optional:
                raise self.fail(
                    f"{prefix}{name}", f"unknown key; expected one of {', '.join(sorted(required | optional))}"
                )
        for name in sorted(required):
            if name not in value:
                raise self.fail(f"{prefix}{name}", "is required")
        return value

    def list(self, mapping: dict, key: str, default: list | None = None) -> list:
        value = mapping.get(key, default)
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.fail(key, "must be a non-empty list")
        return value

    def choice(self, value: Any, key: str, choices) -> str:
        if value not in choices:
            raise self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def number(self, value: Any, key: str, kind: type, minimum: float) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise self.fail(key, f"must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {value!r}")
        return kind(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def path(self, value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a path, got {value!r}")
        return Path(value)

    def model(self, value: Any, key: str) -> ModelEntry:
        if isinstance(value, str):
            value = {"model": value}
        entry = dict(self.mapping(value, key, optional={"model", "size", "checkpoint"}))
        if "model" not in entry:
            if not isinstance(entry.get("checkpoint"), str):
                raise self.fail(key, "needs model (and size, for random weights) or a checkpoint that names its model")
            try:  # the checkpoint's config.json names its family, as for ser-export
                entry["model"] = detect(entry["checkpoint"]).spec.name
            except CheckpointError as e:
                raise self.fail(f"{key}.checkpoint", str(e)) from None
        name = self.choice(entry["model"], f"{key}.model", REGISTRY)
        if "size" in entry and "checkpoint" in entry:
            raise self.fail(key, "give size (random weights) or checkpoint (trained), not both")
        size = entry.get("size")
        if size is not None and size not in REGISTRY[name].sizes:
            raise self.fail(f"{key}.size", f"{size!r} is not one of {', '.join(REGISTRY[name].sizes)}")
        if size is None and "checkpoint" not in entry:
            raise self.fail(key, "needs size (random weights) or checkpoint (a trained run folder or hub id)")
        checkpoint = entry.get("checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise self.fail(f"{key}.checkpoint", f"must be a path or hub id, got {checkpoint!r}")
        return ModelEntry(name, size, checkpoint)
