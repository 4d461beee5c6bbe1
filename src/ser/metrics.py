"""Scores: a candidate's logits against a reference's (`Agreement`: the one comparison export validation,
the INT8 gate and the benchmarks report), and classification on a labelled set (accuracy, per-class
precision/recall/F1, macro and weighted F1, confusion matrix). numpy only (the tests hold them to
scikit-learn's); the plot needs matplotlib."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Agreement:
    """How a candidate's logits agree with a reference's on the same clips, row by row."""

    clips: int
    agreed: int  # clips whose top-1 label is the reference's
    max_abs_logit_error: float
    mean_abs_logit_error: float

    @classmethod
    def of(cls, reference: np.ndarray, candidate: np.ndarray) -> Agreement:
        reference, candidate = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
        if reference.shape != candidate.shape or reference.ndim != 2 or len(reference) == 0:
            raise ValueError(
                f"need two equal, non-empty [clips, labels] arrays, got {reference.shape} and {candidate.shape}"
            )
        error = np.abs(reference - candidate)
        agreed = int((reference.argmax(axis=1) == candidate.argmax(axis=1)).sum())
        return cls(len(reference), agreed, float(error.max()), float(error.mean()))

    @property
    def top1_agreement(self) -> float:
        return self.agreed / self.clips

    def to_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "top1_agreement": self.top1_agreement}


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
