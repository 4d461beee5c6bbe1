"""The seven emotion labels, in the order every model's logits use by default, and the folder names
that datasets use for them."""

from __future__ import annotations

LABELS: tuple[str, ...] = ("angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")

# Spellings seen in public corpora: RAVDESS, CREMA-D (ANG, DIS, ...), TESS ("ps" = pleasant surprise),
# SAVEE, and the Kaggle "audio-emotions" merge, which spells one folder "Suprised".
_ALIASES: dict[str, tuple[str, ...]] = {
    "angry": ("anger", "ang", "mad"),
    "disgusted": ("disgust", "dis", "disgusting"),
    "fearful": ("fear", "fea", "afraid", "scared"),
    "happy": ("happiness", "hap", "joy", "joyful"),
    "neutral": ("neu", "neutrality"),
    "sad": ("sadness", "unhappy"),
    "surprised": ("surprise", "suprised", "suprise", "sur", "ps", "pleasant_surprise", "pleasant_surprised"),
}
_LOOKUP = {alias: label for label, aliases in _ALIASES.items() for alias in (label, *aliases)}


def label_from_name(name: str) -> str | None:
    """The label a folder or CSV value names ("Angry", "ANG", "pleasant surprise"), or None."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    return _LOOKUP.get(key)


def label_problem(labels: tuple[str, ...] | list[str], num_logits: int) -> str | None:
    """Why `labels` cannot name a graph's `num_logits` outputs, or None: they must be non-empty strings,
    unique, and exactly as many as the logits (one score per label, none lost, none invented)."""
    if len(labels) != num_logits:
        return f"{len(labels)} labels for {num_logits} logits"
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            return f"label {i} is empty"
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label in seen:
            return f"label {label!r} is given twice (ids {seen[label]} and {i})"
        seen[label] = i
    return None


def canonical_labels(labels: tuple[str, ...]) -> tuple[str | None, ...]:
    """Each label's canonical one of the seven, or None (e.g. "calm"): so answers of models with other label
    sets ("neu", "hap", ...) can be compared."""
    return tuple(label_from_name(label) for label in labels)


def truth_indices(emotions: list[str] | tuple[str, ...], labels: tuple[str, ...]) -> list[int]:
    """Each clip's emotion (one of the seven, from its folder) as the index of the model's label that names it,
    or -1 where the model has none (a four-label model on a fearful clip): models spell labels their own way
    ("disgust", "hap")."""
    index = {canonical: i for i, canonical in reversed(list(enumerate(canonical_labels(labels)))) if canonical}
    return [index.get(emotion, -1) for emotion in emotions]
