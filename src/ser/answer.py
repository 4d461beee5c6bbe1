"""What a model answers, as one concept with two kinds: categories or dimensions.

*Categories*: labels with probabilities that sum to 1 (the graph's outputs are logits; the answer is
their softmax and the most likely label). *Dimensions*: named regression values such as arousal,
dominance and valence (audeering's MSP-Podcast model), answered as the graph gives them. The bundle's
manifest declares which (`answer`), and every stage — recognizer, timeline, ser-infer, the service,
the Open Inference Protocol, Triton — asks `AnswerSpec` and `Prediction` rather than growing a branch
of its own. numpy only: the runtime imports this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CATEGORIES, DIMENSIONS = "categories", "dimensions"
KINDS = (CATEGORIES, DIMENSIONS)


@dataclass(frozen=True)
class Prediction:
    """One clip's answer. Categories: `label`, `scores` (every label's probability) and `canonical` (the label
    as one of ser's seven, or None). Dimensions: `dimensions` (each named value, in the model's order), with
    `label` None and `scores` empty. `embedding`: the pooled representation, where the bundle has one."""

    label: str | None
    scores: dict[str, float]
    duration_s: float  # length of the audio that was answered
    canonical: str | None = None
    dimensions: dict[str, float] | None = None
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def kind(self) -> str:
        return CATEGORIES if self.dimensions is None else DIMENSIONS

    @property
    def values(self) -> dict[str, float]:
        """The answer's numbers by name: probabilities per label, or values per dimension."""
        return self.scores if self.dimensions is None else self.dimensions

    def to_dict(self) -> dict[str, Any]:
        """The JSON form every front end gives (ser-infer --json, /v1/predict)."""
        if self.dimensions is None:
            record: dict[str, Any] = {"label": self.label, "canonical": self.canonical, "scores": self.scores}
        else:
            record = {"dimensions": self.dimensions}
        record["duration_s"] = self.duration_s
        if self.embedding is not None:
            record["embedding"] = [float(v) for v in self.embedding]
        return record

    def describe(self) -> str:
        """One line for people: the label and the scores by rank, or each dimension in order."""
        if self.dimensions is None:
            ranked = sorted(self.scores.items(), key=lambda kv: -kv[1])
            return f"{self.label}\t({', '.join(f'{k} {v:.2f}' for k, v in ranked)})"
        return "\t".join(f"{k} {v:.3f}" for k, v in self.dimensions.items())


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    answer: Prediction

    @property
    def label(self) -> str | None:
        return self.answer.label

    @property
    def scores(self) -> dict[str, float]:
        return self.answer.scores

    @property
    def dimensions(self) -> dict[str, float] | None:
        return self.answer.dimensions

    def to_dict(self) -> dict[str, Any]:
        answer = {k: v for k, v in self.answer.to_dict().items() if k != "duration_s"}
        return {"start_s": self.start_s, "end_s": self.end_s, **answer}


@dataclass(frozen=True)
class Timeline:
    """The answer per window of a long recording, and overall: the duration-weighted mean of the windows'
    probabilities or dimension values (so a long calm stretch outweighs a short outburst)."""

    windows: tuple[Window, ...]
    overall: Prediction

    @property
    def label(self) -> str | None:
        return self.overall.label

    @property
    def scores(self) -> dict[str, float]:
        return self.overall.scores

    @property
    def dimensions(self) -> dict[str, float] | None:
        return self.overall.dimensions

    @property
    def duration_s(self) -> float:
        return self.overall.duration_s

    def to_dict(self) -> dict[str, Any]:
        return {**self.overall.to_dict(), "windows": [w.to_dict() for w in self.windows]}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, stable for large logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class AnswerSpec:
    """How to read a graph's outputs [batch, len(names)]: `kind` and the outputs' names in order (labels, or
    dimensions); `canonical` gives each label's one of the seven (categories only)."""

    kind: str
    names: tuple[str, ...]
    canonical: tuple[str | None, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"answer kind {self.kind!r}: must be one of {', '.join(KINDS)}")

    @property
    def is_categorical(self) -> bool:
        return self.kind == CATEGORIES

    def to_dict(self) -> dict[str, Any]:
        """The manifest's `answer` (the names, in order, are the manifest's `labels`)."""
        return {"kind": self.kind}

    def values(self, outputs: np.ndarray) -> np.ndarray:
        """The answer's numbers [batch, names] from the graph's outputs: probabilities, or the values as given."""
        outputs = np.asarray(outputs, dtype=np.float64)
        return softmax(outputs) if self.is_categorical else outputs

    def prediction(self, values: np.ndarray, duration_s: float, embedding: np.ndarray | None = None) -> Prediction:
        """One clip's Prediction from its row of `values`."""
        named = {name: float(v) for name, v in zip(self.names, values, strict=True)}
        if not self.is_categorical:
            return Prediction(None, {}, duration_s, dimensions=named, embedding=embedding)
        best = int(np.argmax(values))
        canonical = self.canonical[best] if self.canonical else None
        return Prediction(self.names[best], named, duration_s, canonical=canonical, embedding=embedding)

    def predictions(
        self, outputs: np.ndarray, durations_s: Sequence[float], embeddings: np.ndarray | None = None
    ) -> list[Prediction]:
        values = self.values(outputs)
        return [
            self.prediction(row, d, None if embeddings is None else embeddings[i])
            for i, (row, d) in enumerate(zip(values, durations_s, strict=True))
        ]

    def timeline(self, bounds: Sequence[tuple[int, int]], answers: Sequence[Prediction], sample_rate: int,
                 n_samples: int) -> Timeline:  # fmt: skip
        """A recording of `n_samples`: its windows ([start, end) sample ranges with their answers) and the
        duration-weighted mean of their values as the overall answer."""
        windows = tuple(Window(a / sample_rate, b / sample_rate, p) for (a, b), p in zip(bounds, answers, strict=True))
        weights = np.array([w.end_s - w.start_s for w in windows])
        values = np.array([[w.answer.values[name] for name in self.names] for w in windows])
        overall = (values * weights[:, None]).sum(axis=0) / weights.sum()
        return Timeline(windows, self.prediction(overall, n_samples / sample_rate))
