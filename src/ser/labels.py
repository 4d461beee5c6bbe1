"""The seven emotion labels, in the order every model's logits use by default."""

LABELS: tuple[str, ...] = ("angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")
