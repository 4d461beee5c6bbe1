"""The accuracy gate for quantized graphs: agreement with FP32 PyTorch and macro-F1 on real clips.

A quantized export ships only if its top-1 answers agree with the FP32 PyTorch model on an
evaluation folder (default 99 %) and, where the folder is labelled, its macro-F1 is within
`max_f1_drop` points of PyTorch's. `search_fp32_fallback` keeps the most sensitive nodes in FP32,
doubling their number each round, until the gate passes or the fallback budget is spent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ser.export.calibration import AudioFolderReader
from ser.export.validate import reference_logits
from ser.runtime.base import Backend
from ser.training.metrics import classification_metrics

log = logging.getLogger(__name__)


class ExportGateError(RuntimeError):
    """A quantized graph that misses the accuracy gate even with the allowed FP32 fallback."""


@dataclass(frozen=True)
class Gate:
    min_agreement: float = 0.99  # top-1 agreement with FP32 PyTorch, 0..1
    max_f1_drop: float | None = 0.5  # macro-F1 points (0..100) below PyTorch's; None: not checked
    max_fp32_fraction: float = 0.5  # at most this share of the quantizable nodes may fall back to FP32

    def __post_init__(self) -> None:
        if not 0 <= self.min_agreement <= 1:
            raise ValueError(f"--min-agreement {self.min_agreement}: must be between 0 and 1")
        if self.max_f1_drop is not None and self.max_f1_drop < 0:
            raise ValueError(f"--max-f1-drop {self.max_f1_drop}: must be 0 or more points")
        if not 0 <= self.max_fp32_fraction <= 1:
            raise ValueError(f"--max-fp32-fraction {self.max_fp32_fraction}: must be between 0 and 1")


@dataclass(frozen=True)
class Reference:
    """PyTorch FP32 on the evaluation clips: logits [clips, labels] and, if labelled, true indices."""

    logits: np.ndarray
    truth: np.ndarray | None
    labels: tuple[str, ...]

    @classmethod
    def compute(cls, module: nn.Module, reader: AudioFolderReader, labels: tuple[str, ...]) -> Reference:
        logits = np.stack([reference_logits(module, clip) for clip in reader.clips])
        truth = reader.label_indices(labels) if reader.labelled else None
        return cls(logits, truth, labels)

    def macro_f1(self, logits: np.ndarray) -> float | None:
        if self.truth is None:
            return None
        return 100 * classification_metrics(self.truth, logits.argmax(axis=1), self.labels).macro_f1


def agreement_lower_bound(agreed: int, clips: int, confidence: float = 0.95) -> float:
    """The one-sided Clopper-Pearson lower bound on the agreement rate that `agreed` of `clips` shows, at
    `confidence`: 70 of 70 only says ≥ 95.8 % (0.05 ** (1 / 70)); 299 of 299 says ≥ 99.0 %."""
    if clips <= 0 or agreed <= 0:
        return 0.0
    alpha = 1 - confidence

    def tail(p: float) -> float:  # P(X >= agreed) for X ~ Binomial(clips, p)
        log_terms = [
            math.lgamma(clips + 1) - math.lgamma(i + 1) - math.lgamma(clips - i + 1)
            + i * math.log(p) + (clips - i) * math.log1p(-p)
            for i in range(agreed, clips + 1)
        ]  # fmt: skip
        top = max(log_terms)
        return math.exp(top) * sum(math.exp(t - top) for t in log_terms)

    low, high = 0.0, 1.0
    for _ in range(60):  # the tail grows with p: bisect for tail(p) = alpha
        mid = (low + high) / 2
        low, high = (mid, high) if tail(mid) < alpha else (low, mid)
    return low


@dataclass(frozen=True)
class GateResult:
    agreement: float
    macro_f1: float | None  # points; None when the evaluation clips are unlabelled
    reference_macro_f1: float | None
    clips: int
    passed: bool

    @property
    def agreement_lower_bound(self) -> float:
        """What the clips show with 95 % confidence (the gate still judges the point agreement)."""
        return agreement_lower_bound(round(self.agreement * self.clips), self.clips)

    @property
    def f1_drop(self) -> float | None:
        if self.macro_f1 is None or self.reference_macro_f1 is None:
            return None
        return self.reference_macro_f1 - self.macro_f1

    def to_dict(self) -> dict:
        return {**asdict(self), "f1_drop": self.f1_drop, "agreement_lower_bound_95": self.agreement_lower_bound}

    def describe(self) -> str:
        text = (
            f"top-1 agreement {self.agreement:.1%} on {self.clips} clips (≥ {self.agreement_lower_bound:.1%} at 95 %)"
        )
        if self.macro_f1 is not None:
            text += f", macro-F1 {self.macro_f1:.1f} vs PyTorch {self.reference_macro_f1:.1f}"
        return text


def score(backend: Backend, reader: AudioFolderReader, reference: Reference, gate: Gate) -> GateResult:
    """Run `backend` (active) on every evaluation clip and judge it against `gate`."""
    logits = np.stack([backend.infer(feeds)["logits"][0] for feeds in reader])
    agreement = float(np.mean(logits.argmax(axis=1) == reference.logits.argmax(axis=1)))
    macro_f1 = reference.macro_f1(logits)
    reference_f1 = reference.macro_f1(reference.logits)
    passed = agreement >= gate.min_agreement
    if gate.max_f1_drop is not None and macro_f1 is not None and reference_f1 is not None:
        passed = passed and reference_f1 - macro_f1 <= gate.max_f1_drop
    return GateResult(agreement, macro_f1, reference_f1, len(reader), passed)


@dataclass(frozen=True)
class FallbackResult:
    result: GateResult
    fp32_nodes: tuple[str, ...]
    tried: tuple[tuple[int, GateResult], ...]  # (nodes kept FP32, result) for every candidate scored


def search_fp32_fallback(
    quantize: Callable[[Path, Sequence[str]], None],
    evaluate: Callable[[Path], GateResult],
    rank: Callable[[Path], list[str]],
    quantizable: Sequence[str],
    gate: Gate,
    work_dir: Path,
) -> tuple[Path, FallbackResult]:
    """Quantize everything; if the gate fails, keep the top-ranked nodes FP32 (1, 2, 4, ... up to the
    budget) until it passes. Returns the passing graph's path; raises ExportGateError otherwise.

    `quantize(out, exclude)` writes a candidate, `evaluate(path)` scores it, `rank(path)` orders the
    quantizable nodes from most to least sensitive using the fully quantized candidate.
    """
    budget = int(gate.max_fp32_fraction * len(quantizable))
    tried: list[tuple[int, GateResult]] = []
    candidate = work_dir / "int8-0.onnx"
    quantize(candidate, ())
    result = evaluate(candidate)
    tried.append((0, result))
    log.info("INT8, all %d nodes quantized: %s", len(quantizable), result.describe())
    if result.passed:
        return candidate, FallbackResult(result, (), tuple(tried))
    ranked = rank(candidate)
    count = 1
    while count <= budget:
        excluded = tuple(ranked[:count])
        candidate = work_dir / f"int8-{count}.onnx"
        quantize(candidate, excluded)
        result = evaluate(candidate)
        tried.append((count, result))
        log.info("INT8 with %d sensitive nodes in FP32: %s", count, result.describe())
        if result.passed:
            return candidate, FallbackResult(result, excluded, tuple(tried))
        if count == budget:
            break
        count = min(2 * count, budget)
    history = "; ".join(f"{n} FP32 → {r.describe()}" for n, r in tried)
    raise ExportGateError(
        f"INT8 misses the accuracy gate (min agreement {gate.min_agreement:.1%}, max macro-F1 drop "
        f"{gate.max_f1_drop} points) even with {budget} of {len(quantizable)} nodes in FP32 "
        f"(--max-fp32-fraction {gate.max_fp32_fraction}): {history}; no bundle written"
    )
