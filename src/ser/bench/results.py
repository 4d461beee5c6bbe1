"""What a benchmark run found, as frozen dataclasses: written to results.json and read back from it, so the
report, the plots, `compare` and the tests share one typed record (a renamed field is an error, not an
empty column). Latency summaries are computed from the raw samples, never stored twice."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from typing import Any

import numpy as np

from ser.bench.measure import latency_summary, throughput
from ser.metrics import Agreement, RegressionMetrics


@dataclass(frozen=True)
class Case:
    """One batch size × clip length of one configuration: the raw latency samples and their speed-up."""

    batch: int
    seconds: float
    samples_s: tuple[float, ...]
    speedup: float | None = None  # the reference's median over this one's, same case
    # The reference's samples from the rounds this one ran in, when a model's workers ran in groups
    # (Timing.workers); None when every configuration shared the reference's rounds.
    reference_samples_s: tuple[float, ...] | None = None

    @cached_property
    def summary(self) -> dict[str, float]:
        return latency_summary(self.samples_s)  # read by every row, plot and comparison: computed once

    @property
    def p50_ms(self) -> float:
        return self.summary["p50_ms"]

    def to_json(self) -> dict[str, Any]:
        summary = self.summary
        return {**asdict(self), **summary, **throughput(self.batch, self.seconds, summary["mean_ms"])}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Case:
        reference = data.get("reference_samples_s")
        return cls(data["batch"], data["seconds"], tuple(data["samples_s"]), data.get("speedup"),
                   None if reference is None else tuple(reference))  # fmt: skip


@dataclass(frozen=True)
class Cold:
    load_s: float
    first_s: float  # the first answer after loading

    @property
    def cold_start_s(self) -> float:
        return self.load_s + self.first_s


@dataclass(frozen=True)
class Memory:
    peak_rss_mib: float
    gpu_mib: float | None
    torch_imported: bool  # an ONNX Runtime worker must not pay for torch


@dataclass(frozen=True)
class Accuracy:
    accuracy: float
    macro_f1: float
    f1: dict[str, float]


IDENTITY = ("key", "model_key", "model", "size", "checkpoint", "backend", "precision", "threads", "device", "reference")


@dataclass(frozen=True)
class ConfigResult:
    """One configuration (model × backend × precision × threads): how it ran, or why it did not."""

    key: str
    model_key: str
    model: str
    size: str | None
    checkpoint: str | None
    backend: str
    precision: str
    threads: int
    device: str
    reference: bool  # PyTorch eager FP32: what every other row of its model is measured against
    error: str | None = None
    cases: tuple[Case, ...] = ()
    labels: tuple[str, ...] = ()
    answer: str = "categories"  # what the outputs are (ser.answer): categories (logits) or dimensions (values)
    logits: tuple[tuple[float, ...], ...] | None = None  # per evaluation clip, in `labels` order
    bytes: int | None = None  # the model's size as this backend loads it
    cold: Cold | None = None
    memory: Memory | None = None
    export: dict[str, Any] | None = None  # how its bundle (or peer IR) was made: bundle, export_s, ...
    accuracy: Accuracy | None = None  # against the clips' labels
    agreement: Agreement | None = None  # against the reference's logits
    rated: RegressionMetrics | None = None  # a dimensional model against the clips' ratings (CCC, r, MAE)

    def case(self, batch: int, seconds: float) -> Case | None:
        return next((c for c in self.cases if (c.batch, c.seconds) == (batch, seconds)), None)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["cases"] = [case.to_json() for case in self.cases]
        data["labels"] = list(self.labels)
        data["logits"] = None if self.logits is None else [list(row) for row in self.logits]
        data["cold"] = None if self.cold is None else {**asdict(self.cold), "cold_start_s": self.cold.cold_start_s}
        data["memory"] = None if self.memory is None else asdict(self.memory)
        data["accuracy"] = None if self.accuracy is None else asdict(self.accuracy)
        data["agreement"] = None if self.agreement is None else self.agreement.to_dict()
        data["rated"] = None if self.rated is None else asdict(self.rated)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConfigResult:
        cold, memory, accuracy, agreement = (data.get(k) for k in ("cold", "memory", "accuracy", "agreement"))
        return cls(
            **{key: data[key] for key in IDENTITY},
            error=data.get("error"),
            cases=tuple(Case.from_json(c) for c in data.get("cases", [])),
            labels=tuple(data.get("labels", [])),
            answer=data.get("answer", "categories"),
            logits=None if data.get("logits") is None else tuple(tuple(row) for row in data["logits"]),
            bytes=data.get("bytes"),
            cold=None if cold is None else Cold(cold["load_s"], cold["first_s"]),
            memory=None if memory is None else Memory(**memory),
            export=data.get("export"),
            accuracy=None if accuracy is None else Accuracy(**accuracy),
            agreement=None if agreement is None else _agreement(agreement),
            rated=None if not data.get("rated") else _rated(data["rated"]),
        )


def _agreement(data: dict[str, Any]) -> Agreement:
    """An Agreement as to_dict wrote it (a dimensional one has no top-1 count, but its CCC per dimension)."""
    ccc = data.get("ccc")
    return Agreement(data["clips"], data.get("agreed", data["clips"]), data["max_abs_logit_error"],
                     data["mean_abs_logit_error"], None if ccc is None else tuple(ccc))  # fmt: skip


def _rated(data: dict[str, Any]) -> RegressionMetrics:
    return RegressionMetrics(**{**data, "dimensions": tuple(data["dimensions"])})


@dataclass(frozen=True)
class Results:
    suite: dict[str, Any]  # the suite as run (its YAML, checked and expanded)
    environment: dict[str, Any]  # machine, CPU features, GPUs, library versions (ser.bench.environment)
    started: str
    wall_s: float
    clips: tuple[dict[str, Any], ...]  # the evaluation clips: path and label (None: synthetic), or ratings
    configs: tuple[ConfigResult, ...] = field(default_factory=tuple)

    @property
    def labelled(self) -> bool:
        return bool(self.clips) and all(clip["label"] is not None for clip in self.clips)

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "environment": self.environment,
            "started": self.started,
            "wall_s": self.wall_s,
            "clips": list(self.clips),
            "configs": [config.to_json() for config in self.configs],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        return cls(
            suite=data["suite"],
            environment=data["environment"],
            started=data["started"],
            wall_s=data["wall_s"],
            clips=tuple(data["clips"]),
            configs=tuple(ConfigResult.from_json(c) for c in data["configs"]),
        )


def speedups(configs: list[ConfigResult]) -> list[ConfigResult]:
    """Each configuration with every case's speed-up over its reference (the same model and threads): over
    the reference's samples from the same rounds where the model's workers ran in groups."""
    references = {(c.model_key, c.threads): c for c in configs if c.reference}
    scored = []
    for config in configs:
        reference = references.get((config.model_key, config.threads))
        cases = []
        for case in config.cases:
            ref = reference.case(case.batch, case.seconds) if reference else None
            ref_samples = case.reference_samples_s or (ref.samples_s if ref else None)
            speedup = float(np.median(ref_samples) / np.median(case.samples_s)) if ref_samples else None
            cases.append(replace(case, speedup=speedup))
        scored.append(replace(config, cases=tuple(cases)))
    return scored
