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
