"""The accuracy gate for quantized graphs: agreement with FP32 PyTorch and macro-F1 on real clips.

A quantized export ships only if what its evaluation clips *show* about its top-1 agreement with the
FP32 PyTorch model — the one-sided 95 % Clopper-Pearson lower bound, not the point estimate — reaches
`min_agreement` (default 99 %), and, where the clips are labelled, its macro-F1 is within
`max_f1_drop` points of PyTorch's. 100 % of 70 clips shows only 95.8 %; showing 99 % takes 299 clips
that all agree, so the default evaluation is 300 clips, disjoint from the calibration clips.
`search_fp32_fallback` keeps the most sensitive nodes in FP32 until the gate passes or the fallback
budget is spent.

A dimensional model (arousal, dominance, valence) is judged by the field's measure instead: on every
evaluation clip, each dimension's concordance correlation coefficient with FP32 PyTorch — its one-sided
lower bound at the same confidence, from a seeded bootstrap over the clips — must reach `min_ccc`, and no
value may be further than `max_abs_error` from PyTorch's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ser.answer import AnswerSpec
from ser.export.calibration import AudioFolderReader
from ser.export.validate import as_backend
from ser.metrics import Agreement, ccc_lower_bound, classification_metrics
from ser.runtime.base import Backend

log = logging.getLogger(__name__)
# A bootstrap bound on the CCC of fewer clips says little: a dimensional gate needs at least this many.
MIN_DIMENSION_CLIPS = 30


class ExportGateError(RuntimeError):
    """A quantized graph that misses the accuracy gate even with the allowed FP32 fallback."""


def agreement_lower_bound(agreed: int, clips: int, confidence: float = 0.95) -> float:
    """The one-sided Clopper-Pearson lower bound on the agreement rate that `agreed` of `clips` shows, at
    `confidence`: 70 of 70 only says ≥ 95.8 % (0.05 ** (1 / 70)); 299 of 299 says ≥ 99.0 %."""
    if clips <= 0 or agreed <= 0:
        return 0.0
    alpha = 1 - confidence
    if agreed == clips:  # the tail is p ** clips: solve it directly
        return alpha ** (1 / clips)

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


@dataclass(frozen=True, kw_only=True)  # wired by name: a reordered field cannot mis-wire a caller
class Gate:
    min_agreement: float = 0.99  # top-1 agreement with FP32 PyTorch the clips must show, 0..1
    max_f1_drop: float | None = 0.5  # macro-F1 points (0..100) below PyTorch's; None: not checked
    max_fp32_fraction: float = 0.5  # at most this share of the quantizable nodes may fall back to FP32
    # judge the one-sided lower bound at this confidence; None: the point agreement on these clips only
    confidence: float | None = 0.95
    # dimensional models: the CCC per dimension the clips must show (its lower bound at `confidence`), and the
    # largest difference from PyTorch's value any clip may have (dimensions are about 0..1)
    min_ccc: float = 0.99
    max_abs_error: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.min_agreement <= 1:
            raise ValueError(f"--min-agreement {self.min_agreement}: must be between 0 and 1")
        if self.max_f1_drop is not None and self.max_f1_drop < 0:
            raise ValueError(f"--max-f1-drop {self.max_f1_drop}: must be 0 or more points")
        if not -1 <= self.min_ccc <= 1:
            raise ValueError(f"--min-ccc {self.min_ccc}: must be between -1 and 1")
        if self.max_abs_error <= 0:
            raise ValueError(f"--max-abs-error {self.max_abs_error}: must be above 0")
        if not 0 <= self.max_fp32_fraction <= 1:
            raise ValueError(f"--max-fp32-fraction {self.max_fp32_fraction}: must be between 0 and 1")
        if self.confidence is not None:
            if not 0 < self.confidence < 1:
                raise ValueError(f"--gate-confidence {self.confidence}: must be above 0 and below 1 (0: off)")
            if self.min_agreement == 1:
                raise ValueError(
                    "--min-agreement 1.0 can never be shown with confidence (no number of clips proves 100 %): "
                    "ask for less, or judge the point agreement (--gate-confidence 0)"
                )

    def shown(self, agreed: int, clips: int) -> float:
        """The agreement `agreed` of `clips` shows: the lower bound, or the point agreement."""
        if self.confidence is None:
            return agreed / clips if clips else 0.0
        return agreement_lower_bound(agreed, clips, self.confidence)

    def allowed_disagreements(self, clips: int) -> int:
        """The most disagreements among `clips` that can still pass; -1 when even none cannot."""
        if self.min_agreement == 0:
            return clips
        if self.confidence is None:
            return math.floor(clips * (1 - self.min_agreement) + 1e-9)
        allowed = -1
        while allowed + 1 <= clips and self.shown(clips - allowed - 1, clips) >= self.min_agreement:
            allowed += 1
        return allowed

    @property
    def min_clips(self) -> int:
        """The fewest evaluation clips that can pass (all agreeing): 299 for 99 % at 95 % confidence."""
        if self.confidence is None or self.min_agreement == 0:
            return 1
        return math.ceil(math.log(1 - self.confidence) / math.log(self.min_agreement))

    def check_clips(self, clips: int, source: str, categorical: bool = True) -> None:
        """Refuse an evaluation that could not pass whatever the graph does, before any work is done."""
        if not categorical:
            if clips < MIN_DIMENSION_CLIPS:
                raise ValueError(
                    f"{source}: {clips} evaluation clips are too few to bound a dimension's CCC; the gate takes at "
                    f"least {MIN_DIMENSION_CLIPS} (--eval-clips, --eval-data)"
                )
            return
        if clips < self.min_clips:
            raise ValueError(
                f"{source}: {clips} evaluation clips can show at most {self.shown(clips, clips):.1%} agreement at "
                f"{self.confidence:.0%} confidence; the gate asks for {self.min_agreement:.1%}, which takes at least "
                f"{self.min_clips} clips that all agree: give more (--eval-clips, --eval-data) or ask less "
                "(--min-agreement, --gate-confidence)"
            )


@dataclass(frozen=True)
class Reference:
    """PyTorch FP32 on the evaluation clips: logits (or dimension values) [clips, names] and, for categories
    from labelled folders, true indices."""

    logits: np.ndarray
    truth: np.ndarray | None
    labels: tuple[str, ...]
    categorical: bool = True

    @classmethod
    def compute(cls, module: nn.Module, reader: AudioFolderReader, answer: AnswerSpec) -> Reference:
        with as_backend(module) as reference:
            logits = reference.logits_each(reader.clips)
        # emotion folders label categories; a dimensional model's values have no truth there
        truth = reader.label_indices(answer.names) if reader.labelled and answer.is_categorical else None
        return cls(logits, truth, answer.names, answer.is_categorical)

    def answers(self) -> dict[str, int]:
        """How often PyTorch answers each label on the evaluation clips (categories; {} for dimensions)."""
        if not self.categorical:
            return {}
        counts = np.bincount(self.logits.argmax(axis=1), minlength=len(self.labels))
        return {label: int(count) for label, count in zip(self.labels, counts, strict=True)}

    def dominant_answer(self, share: float = 0.9) -> tuple[str, int] | None:
        """The label PyTorch answers for at least `share` of the clips, with its count; None if there is none.
        Agreeing with a model that answers one label everywhere is easy and shows little about other speech."""
        if not self.categorical:
            return None
        label, count = max(self.answers().items(), key=lambda item: item[1])
        return (label, count) if count >= share * len(self.logits) else None

    def macro_f1(self, logits: np.ndarray) -> float | None:
        if self.truth is None:
            return None
        known = self.truth >= 0  # clips of an emotion the model has no label for count for agreement only
        if not known.any():
            return None
        predicted = logits.argmax(axis=1)[known]
        return 100 * classification_metrics(self.truth[known], predicted, self.labels).macro_f1


@dataclass(frozen=True)
class GateResult:
    comparison: Agreement  # on the clips scored: fewer than `clips` when too many disagreed to pass
    clips: int
    macro_f1: float | None  # points; None when the clips are unlabelled or not all were scored
    reference_macro_f1: float | None
    confidence: float | None  # what the gate judged: the lower bound at this confidence, or (None) the point
    passed: bool
    ccc_lower_bound: tuple[float, ...] | None = None  # dimensions: per dimension, what the clips show

    @property
    def categorical(self) -> bool:
        return self.comparison.ccc is None

    @property
    def agreed(self) -> int:
        return self.comparison.agreed

    @property
    def scored(self) -> int:
        return self.comparison.clips

    @property
    def agreement(self) -> float:
        return self.comparison.top1_agreement

    @property
    def agreement_lower_bound(self) -> float:
        """What the scored clips show with `confidence` (95 % where the gate judged the point)."""
        return agreement_lower_bound(self.agreed, self.scored, self.confidence or 0.95)

    @property
    def f1_drop(self) -> float | None:
        if self.macro_f1 is None or self.reference_macro_f1 is None:
            return None
        return self.reference_macro_f1 - self.macro_f1

    def summary(self) -> dict:
        """One candidate of a search, for the manifest."""
        if self.categorical:
            return {"agreed": self.agreed, "scored": self.scored, "passed": self.passed}
        bound = None if self.ccc_lower_bound is None else round(min(self.ccc_lower_bound), 5)
        return {"scored": self.scored, "min_ccc_lower_bound": bound,
                "max_abs_error": self.comparison.max_abs_logit_error, "passed": self.passed}  # fmt: skip

    def to_dict(self) -> dict:
        fields = {key: value for key, value in asdict(self).items() if key != "comparison"}
        if not self.categorical:
            fields["ccc_lower_bound"] = None if self.ccc_lower_bound is None else list(self.ccc_lower_bound)
            return {
                **{k: v for k, v in fields.items() if k not in ("macro_f1", "reference_macro_f1")},
                "scored": self.scored,
                "ccc": list(self.comparison.ccc or ()),
                "max_abs_error": self.comparison.max_abs_logit_error,
                "mean_abs_error": self.comparison.mean_abs_logit_error,
            }
        fields.pop("ccc_lower_bound")
        return {
            **fields,
            "agreed": self.agreed,
            "scored": self.scored,
            "max_abs_logit_error": self.comparison.max_abs_logit_error,
            "agreement": self.agreement,
            "agreement_lower_bound": self.agreement_lower_bound,
            "f1_drop": self.f1_drop,
        }

    def describe(self) -> str:
        level = f"{self.confidence or 0.95:.0%}"
        if not self.categorical:
            error = self.comparison.max_abs_logit_error
            if self.ccc_lower_bound is None:
                return f"stopped after {self.scored} of {self.clips} clips: a value {error:.3g} from PyTorch's"
            bounds = ", ".join(f"{c:.4f} (≥ {b:.4f})" for c, b in zip(self.comparison.ccc or (), self.ccc_lower_bound,
                                                                     strict=True))  # fmt: skip
            return f"CCC per dimension {bounds} at {level} on {self.clips} clips, max |error| {error:.3g}"
        if self.scored < self.clips:
            missed = self.scored - self.agreed
            return (
                f"stopped after {self.scored} of {self.clips} clips: {missed} "
                f"{'disagreement is' if missed == 1 else 'disagreements are'} more than the gate allows"
            )
        shown = f"≥ {self.agreement_lower_bound:.1%} at {level}"
        text = f"top-1 agreement {self.agreement:.1%} on {self.clips} clips ({shown})"
        if self.macro_f1 is not None:
            text += f", macro-F1 {self.macro_f1:.1f} vs PyTorch {self.reference_macro_f1:.1f}"
        return text


def score(backend: Backend, reader: AudioFolderReader, reference: Reference, gate: Gate) -> GateResult:
    """Run `backend` (active) on the evaluation clips and judge it against `gate`, stopping as soon as
    more clips disagree than could still pass (most candidates of a fallback search fail, and fail early)."""
    if not reference.categorical:
        return _score_dimensions(backend, reader, reference, gate)
    allowed = gate.allowed_disagreements(len(reader))
    expected = reference.logits.argmax(axis=1)
    rows, disagreed = [], 0
    for index, clip in enumerate(reader.clips):
        rows.append(backend.logits_each([clip])[0])
        disagreed += int(rows[-1].argmax() != expected[index])
        if disagreed > allowed:
            break
    logits = np.stack(rows)
    comparison = Agreement.of(reference.logits[: len(rows)], logits)
    complete = comparison.clips == len(reader)
    macro_f1 = reference.macro_f1(logits) if complete else None
    reference_f1 = reference.macro_f1(reference.logits)
    passed = complete and gate.shown(comparison.agreed, comparison.clips) >= gate.min_agreement
    if gate.max_f1_drop is not None and macro_f1 is not None and reference_f1 is not None:
        passed = passed and reference_f1 - macro_f1 <= gate.max_f1_drop
    return GateResult(comparison, len(reader), macro_f1, reference_f1, gate.confidence, passed)


def _score_dimensions(backend: Backend, reader: AudioFolderReader, reference: Reference, gate: Gate) -> GateResult:
    """The dimensional gate: every clip within `max_abs_error` of PyTorch (stopping at the first that is not),
    and each dimension's CCC lower bound over the clips at least `min_ccc`."""
    rows = []
    for index, clip in enumerate(reader.clips):
        rows.append(backend.logits_each([clip])[0])
        if np.abs(rows[-1] - reference.logits[index]).max() > gate.max_abs_error:
            break
    values = np.stack(rows)
    comparison = Agreement.of(reference.logits[: len(rows)], values, dimensions=True)
    if len(rows) < len(reader):
        return GateResult(comparison, len(reader), None, None, gate.confidence, False)
    if gate.confidence is None:  # the point CCC on these clips
        bounds = tuple(comparison.ccc or ())
    else:
        bounds = tuple(ccc_lower_bound(reference.logits[:, i], values[:, i], gate.confidence)
                       for i in range(values.shape[1]))  # fmt: skip
    passed = min(bounds) >= gate.min_ccc and comparison.max_abs_logit_error <= gate.max_abs_error
    return GateResult(comparison, len(reader), None, None, gate.confidence, passed, bounds)


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
    """Quantize everything; if the gate fails, try the budget first (the most top-ranked nodes FP32 it
    allows): if even that fails, give up at once, since a refusal should not cost a whole search. Otherwise
    keep 1, 2, 4, ... top-ranked nodes FP32 until one passes, then bisect between the last failing and the
    first passing count for the fewest FP32 nodes that pass. Returns the passing graph's path; raises
    ExportGateError otherwise.

    `quantize(out, exclude)` writes a candidate, `evaluate(path)` scores it, `rank(path)` orders the
    quantizable nodes from most to least sensitive using the fully quantized candidate. Every graph
    returned was itself written by `quantize` and passed `evaluate`: the ranking only chooses the order.
    """
    budget = int(gate.max_fp32_fraction * len(quantizable))
    tried: list[tuple[int, GateResult]] = []
    ranked: list[str] = []

    def attempt(count: int) -> tuple[Path, GateResult]:
        candidate = work_dir / f"int8-{count}.onnx"
        quantize(candidate, tuple(ranked[:count]))
        result = evaluate(candidate)
        tried.append((count, result))
        log.info("INT8 with %d of %d nodes in FP32: %s", count, len(quantizable), result.describe())
        return candidate, result

    candidate, result = attempt(0)
    if result.passed:
        return candidate, FallbackResult(result, (), tuple(tried))
    ranked = rank(candidate)
    if budget > 0:
        candidate, result = attempt(budget)
    failed, passing = 0, budget
    if result.passed:  # climb 1, 2, 4, ... to the first count that passes too
        count = 1
        while count < budget:
            lower = attempt(count)
            if lower[1].passed:
                passing, (candidate, result) = count, lower
                break
            failed, count = count, 2 * count
    if not result.passed:
        history = "; ".join(f"{n} FP32 → {r.describe()}" for n, r in tried)
        at = "" if gate.confidence is None else f" at {gate.confidence:.0%} confidence"
        asked = (
            f"agreement shown ≥ {gate.min_agreement:.1%}{at}, max macro-F1 drop {gate.max_f1_drop} points"
            if result.categorical
            else f"CCC shown ≥ {gate.min_ccc} per dimension{at}, max |error| {gate.max_abs_error}"
        )
        raise ExportGateError(
            f"INT8 misses the accuracy gate ({asked}) even with {budget} of {len(quantizable)} nodes in FP32 "
            f"(--max-fp32-fraction {gate.max_fp32_fraction}): {history}; no bundle written"
        )
    best = candidate, result
    while passing - failed > 1:  # the fewest nodes in FP32 between a count that failed and one that passed
        middle = (failed + passing) // 2
        candidate, result = attempt(middle)
        if result.passed:
            passing, best = middle, (candidate, result)
        else:
            failed = middle
    return best[0], FallbackResult(best[1], tuple(ranked[:passing]), tuple(tried))
