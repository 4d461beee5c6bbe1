"""The published speech-classification models, written in the tests from their public descriptions (not
ser's module), and checkpoints in their layouts saved as a user's folder holds them.

Sources: m3hrdadfi/soxan `src/models.py` (`Wav2Vec2ClassificationHead`, `Wav2Vec2ForSpeechClassification`,
`HubertForSpeechClassification`: last hidden state → `merged_strategy` mean / sum / max over dim 1 → dropout
→ dense → tanh → dropout → out_proj), and audeering's model card for
`wav2vec2-large-robust-12-ft-emotion-msp-dim` (`RegressionHead` and `EmotionModel`: the same head over the
mean of the last hidden state; outputs arousal, dominance, valence; the feature extractor normalises).
Both pool over every frame they are given, so a clip is run alone, as their cards run it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

DIMENSIONS = ("arousal", "dominance", "valence")


class PublishedHead(nn.Module):
    def __init__(self, hidden: int, outputs: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(0.1)
        self.out_proj = nn.Linear(hidden, outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features)
        x = torch.tanh(self.dense(x))
        return self.out_proj(self.dropout(x))


class PublishedModel(nn.Module):
    """soxan's *ForSpeechClassification / audeering's EmotionModel: returns (pooled, outputs)."""

    def __init__(self, encoder: nn.Module, head: PublishedHead, pooling_mode: str):
        super().__init__()
        self.encoder, self.head, self.pooling_mode = encoder, head, pooling_mode

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        hidden = self.encoder(input_values, attention_mask=attention_mask)[0]
        if self.pooling_mode == "mean":
            pooled = torch.mean(hidden, dim=1)
        elif self.pooling_mode == "sum":
            pooled = torch.sum(hidden, dim=1)
        else:
            pooled = torch.max(hidden, dim=1)[0]
        return pooled, self.head(pooled)


ENCODERS = {"wav2vec2": (Wav2Vec2Model, "Wav2Vec2"), "hubert": (HubertModel, "Hubert")}


def save_checkpoint(path: Path, family: str, config: Wav2Vec2Config, pooling_mode: str, normalize: bool,
                    attention_mask: bool, seed: int = 0) -> Path:  # fmt: skip
    """A checkpoint as the published code leaves it: config.json naming `<Family>ForSpeechClassification` with
    `pooling_mode`, weights `<family>.*`, `classifier.dense.*`, `classifier.out_proj.*`, a feature extractor."""
    encoder_class, prefix = ENCODERS[family]
    torch.manual_seed(seed)
    encoder = encoder_class(config)
    head = PublishedHead(config.hidden_size, config.num_labels)
    # A trained head separates answers by whole units; random init by ~1e-3: make comparisons mean something.
    nn.init.normal_(head.dense.weight, std=3.0 / config.hidden_size**0.5)
    nn.init.normal_(head.out_proj.weight, std=2.0)
    path.mkdir(parents=True, exist_ok=True)
    weights = {f"{family}.{k}": v.contiguous() for k, v in encoder.state_dict().items()}
    weights |= {f"classifier.{k}": v.contiguous() for k, v in head.state_dict().items()}
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    config.architectures = [f"{prefix}ForSpeechClassification"]
    config.save_pretrained(path)
    data = json.loads((path / "config.json").read_text())
    data["pooling_mode"] = pooling_mode
    (path / "config.json").write_text(json.dumps(data, indent=2))
    Wav2Vec2FeatureExtractor(do_normalize=normalize, return_attention_mask=attention_mask).save_pretrained(path)
    return path


def load_published(path: Path) -> tuple[PublishedModel, Wav2Vec2FeatureExtractor]:
    """The published model from a checkpoint folder: encoder by transformers, head from the saved tensors."""
    config = json.loads((path / "config.json").read_text())
    family = config["model_type"]
    encoder = ENCODERS[family][0].from_pretrained(path)
    weights = load_file(path / "model.safetensors")
    head_weights = {k.removeprefix("classifier."): v for k, v in weights.items() if k.startswith("classifier.")}
    head = PublishedHead(config["hidden_size"], len(config["id2label"]))
    head.load_state_dict(head_weights)
    model = PublishedModel(encoder, head, config.get("pooling_mode", "mean")).eval()
    return model, Wav2Vec2FeatureExtractor.from_pretrained(path)


def published_answer(model: PublishedModel, extractor: Wav2Vec2FeatureExtractor, clip) -> tuple:
    """(pooled embedding, outputs) for one clip, run as the model card runs it."""
    inputs = extractor(clip, sampling_rate=16_000, return_tensors="pt")
    with torch.no_grad():
        pooled, outputs = model(**inputs)
    return pooled[0].numpy(), outputs[0].numpy()
