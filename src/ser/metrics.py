"""Scores: a candidate's outputs against a reference's (`Agreement`: the one comparison export validation,
the INT8 gate and the benchmarks report; top-1 agreement for categories, concordance correlation per
dimension for dimensional models), classification on a labelled set (accuracy, per-class
precision/recall/F1, macro and weighted F1, confusion matrix) and regression on one (CCC, Pearson, MAE per
dimension: MSP-Podcast's challenge metric is CCC). numpy only (the tests hold them to scikit-learn's and
SciPy's); the plot needs matplotlib."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient of two 1-D series: 2 cov / (var x + var y + (mean x - mean y)²),
    population moments. 1 only where y equals x; two equal constants count as 1, unequal ones as 0."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    mx, my = x.mean(), y.mean()
    denominator = x.var() + y.var() + (mx - my) ** 2
    if denominator == 0:
        return 1.0
    return float(2 * ((x - mx) * (y - my)).mean() / denominator)


def ccc_lower_bound(
    x: np.ndarray, y: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> float:
    """The one-sided lower bound on the CCC at `confidence`: the (1 - confidence) quantile of a seeded
    percentile bootstrap over the clips (the same clips give the same bound)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return 0.0
    rows = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    bx, by = x[rows], y[rows]
    mx, my = bx.mean(axis=1, keepdims=True), by.mean(axis=1, keepdims=True)
    covariance = ((bx - mx) * (by - my)).mean(axis=1)
    denominator = bx.var(axis=1) + by.var(axis=1) + (mx - my)[:, 0] ** 2
    values = np.where(denominator > 0, 2 * covariance / np.where(denominator > 0, denominator, 1), 1.0)
    return float(np.quantile(values, 1 - confidence))


@dataclass(frozen=True)
class Agreement:
    """How a candidate's outputs agree with a reference's on the same clips, row by row. For categories the
    measure is top-1 agreement; for dimensions (`ccc` given) the CCC per dimension and the max error."""

    clips: int
    agreed: int  # clips whose top-1 is the reference's (categories; for dimensions it means nothing)
    max_abs_logit_error: float  # of logits, or of dimension values
    mean_abs_logit_error: float
    ccc: tuple[float, ...] | None = None  # dimensions: per dimension, in the model's order

    @classmethod
    def of(cls, reference: np.ndarray, candidate: np.ndarray, dimensions: bool = False) -> Agreement:
        reference, candidate = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
        if reference.shape != candidate.shape or reference.ndim != 2 or len(reference) == 0:
            raise ValueError(
                f"need two equal, non-empty [clips, labels] arrays, got {reference.shape} and {candidate.shape}"
            )
        error = np.abs(reference - candidate)
        agreed = int((reference.argmax(axis=1) == candidate.argmax(axis=1)).sum())
        columns = range(reference.shape[1])
        concordance = tuple(ccc(reference[:, i], candidate[:, i]) for i in columns) if dimensions else None
        return cls(len(reference), agreed, float(error.max()), float(error.mean()), concordance)

    @property
    def top1_agreement(self) -> float:
        return self.agreed / self.clips

    @property
    def min_ccc(self) -> float | None:
        return None if self.ccc is None else min(self.ccc)

    def headline(self) -> str:
        """The kind's own measure, for people: top-1 agreement, or the lowest CCC and the max error."""
        if self.ccc is None:
            return f"top-1 agreement {self.top1_agreement:.1%}"
        return f"CCC ≥ {self.min_ccc:.4f} per dimension, max |error| {self.max_abs_logit_error:.3g}"

    def to_dict(self) -> dict[str, float | int]:
        record = {**asdict(self), "top1_agreement": self.top1_agreement}
        if self.ccc is None:
            del record["ccc"]
        else:
            record["ccc"] = list(self.ccc)
            del record["agreed"], record["top1_agreement"]  # no top-1 among regression values
        return record


@dataclass(frozen=True)
class ClassificationMetrics:
    labels: tuple[str, ...]
    accuracy: float
    macro_f1: float
    weighted_f1: float
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]
    confusion: tuple[tuple[int, ...], ...]  # rows: true label, columns: predicted label

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def summary(self) -> str:
        return f"accuracy {self.accuracy:.3f}  macro-F1 {self.macro_f1:.3f}  weighted-F1 {self.weighted_f1:.3f}"


def classification_metrics(
    y_true: np.ndarray | list[int], y_pred: np.ndarray | list[int], labels: tuple[str, ...]
) -> ClassificationMetrics:
    """Scores of predicted class indices against true ones. A class never predicted has precision 0,
    one absent from `y_true` has recall 0 (scikit-learn's zero_division=0); the macro mean runs over
    every label, so a missing class counts against it."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"need two equal, non-empty 1-D label arrays, got {y_true.shape} and {y_pred.shape}")
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    true_positive = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros(n), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(n), where=denominator > 0)
    return ClassificationMetrics(
        labels=tuple(labels),
        accuracy=float(true_positive.sum() / len(y_true)),
        macro_f1=float(f1.mean()),
        weighted_f1=float((f1 * support).sum() / support.sum()),
        precision=dict(zip(labels, precision.tolist(), strict=True)),
        recall=dict(zip(labels, recall.tolist(), strict=True)),
        f1=dict(zip(labels, f1.tolist(), strict=True)),
        support=dict(zip(labels, support.tolist(), strict=True)),
        confusion=tuple(tuple(row) for row in confusion.tolist()),
    )


def plot_confusion(metrics: ClassificationMetrics, path: Path, title: str = "") -> None:
    """A row-normalised confusion matrix with counts, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.array(metrics.confusion)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=120)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(metrics.labels))
    ax.set_xticks(ticks, metrics.labels, rotation=45, ha="right")
    ax.set_yticks(ticks, metrics.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in ticks:
        for j in ticks:
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    ax.set_title(f"{title}\n{metrics.summary()}".strip(), fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true label")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


@dataclass(frozen=True)
class RegressionMetrics:
    """Dimensional scores on a labelled set, per dimension: CCC (the challenge metric), Pearson's r, MAE."""

    dimensions: tuple[str, ...]
    clips: int
    ccc: dict[str, float]
    pearson: dict[str, float]
    mae: dict[str, float]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def summary(self) -> str:
        return "  ".join(f"{d}: CCC {self.ccc[d]:.3f} r {self.pearson[d]:.3f} MAE {self.mae[d]:.3f}"
                         for d in self.dimensions)  # fmt: skip


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, dimensions: tuple[str, ...]) -> RegressionMetrics:
    """Scores of predicted values [clips, dimensions] against true ones."""
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 2 or y_true.shape[1] != len(dimensions) or len(y_true) == 0:
        raise ValueError(f"need two equal, non-empty [clips, {len(dimensions)}] arrays, got {y_true.shape} and "
                         f"{y_pred.shape}")  # fmt: skip

    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        spread = a.std() * b.std()
        return float(((a - a.mean()) * (b - b.mean())).mean() / spread) if spread > 0 else 0.0

    columns = range(len(dimensions))
    return RegressionMetrics(
        dimensions=tuple(dimensions),
        clips=len(y_true),
        ccc={dimensions[i]: ccc(y_true[:, i], y_pred[:, i]) for i in columns},
        pearson={dimensions[i]: pearson(y_true[:, i], y_pred[:, i]) for i in columns},
        mae={dimensions[i]: float(np.abs(y_true[:, i] - y_pred[:, i]).mean()) for i in columns},
    )
