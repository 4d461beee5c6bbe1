"""The model registry: one small declarative record per architecture, looked up by name.

Adding a model means adding a ModelSpec here (and a tiny fixture in the tests, which fail if one
is missing); export, validation and the CLI read everything they need from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import (
    HubertConfig,
    HubertForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2ForSequenceClassification,
)

from ser.labels import LABELS
from ser.models.resnet import ResNet18ForEmotion, ResNetEmotionConfig
from ser.models.wavlm import WavLMEmotionConfig, WavLMForEmotion

# A few small layers: for tests and demos, seconds to export on a laptop.
_TINY_TRANSFORMER = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)
_BASE_TRANSFORMER: dict[str, Any] = {}  # the config classes' defaults are the base models' shapes
_LARGE_TRANSFORMER = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=True,
)
_TRANSFORMER_DROPOUT = ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout")
# SpecAugment and LayerDrop regularise the fine-tuning of a pretrained encoder. From scratch they hurt: a
# small model learns to read the clip's length from how many frames were masked instead of the audio.
_TRANSFORMER_FROM_SCRATCH = {"mask_time_prob": 0.0, "layerdrop": 0.0}
_TRANSFORMER_SIZES = {"tiny": _TINY_TRANSFORMER, "base": _BASE_TRANSFORMER, "large": _LARGE_TRANSFORMER}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    summary: str
    model_class: type[PreTrainedModel]
    config_class: type[PretrainedConfig]
    model_types: tuple[str, ...]  # config.json model_type values this spec can load
    sizes: dict[str, dict[str, Any]]  # size name → config overrides
    default_size: str
    normalize: bool  # zero-mean unit-variance waveform, when the checkpoint does not say
    dropout_keys: tuple[str, ...]  # config fields that one training --dropout value sets
    from_scratch: dict[str, Any]  # config changes for training without a pretrained checkpoint
    fp32_tolerance: float = 1e-3  # max |logit error| of an FP32 export against PyTorch
    fp16_tolerance: float = 5e-2  # the same for --fp16 (FP16 keeps ~3 significant digits)

    def config(self, size: str, labels: tuple[str, ...] = LABELS) -> PretrainedConfig:
        if size not in self.sizes:
            raise ValueError(f"{self.name}: unknown size {size!r}; choose one of {', '.join(self.sizes)}")
        return self.config_class(
            **self.sizes[size],
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )

    def build(self, size: str, labels: tuple[str, ...] = LABELS) -> PreTrainedModel:
        """The architecture at `size` with random weights."""
        return self.model_class(self.config(size, labels)).eval()

    def size_of(self, config: PretrainedConfig) -> str:
        """Which named size a checkpoint's config has, or "custom"."""
        for size in self.sizes:
            reference = self.config(size)
            keys = ("hidden_size", "num_hidden_layers", "n_mels")
            if all(getattr(config, k, None) == getattr(reference, k, None) for k in keys):
                return size
        return "custom"


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="wav2vec2",
            summary="Wav2Vec2ForSequenceClassification (mean pooling, linear head)",
            model_class=Wav2Vec2ForSequenceClassification,
            config_class=Wav2Vec2Config,
            model_types=("wav2vec2",),
            sizes=_TRANSFORMER_SIZES,
            default_size="base",
            normalize=True,
            dropout_keys=_TRANSFORMER_DROPOUT,
            from_scratch=_TRANSFORMER_FROM_SCRATCH,
        ),
        ModelSpec(
            name="hubert",
            summary="HubertForSequenceClassification (mean pooling, linear head)",
            model_class=HubertForSequenceClassification,
            config_class=HubertConfig,
            model_types=("hubert",),
            sizes=_TRANSFORMER_SIZES,
            default_size="large",
            normalize=True,
            dropout_keys=_TRANSFORMER_DROPOUT,
            from_scratch=_TRANSFORMER_FROM_SCRATCH,
        ),
        ModelSpec(
            name="wavlm",
            summary="WavLM with weighted layer sum, attentive statistics pooling and an MLP head",
            model_class=WavLMForEmotion,
            config_class=WavLMEmotionConfig,
            model_types=("wavlm-emotion", "wavlm"),
            sizes=_TRANSFORMER_SIZES,
            default_size="base",
            normalize=False,  # microsoft/wavlm-base-plus's feature extractor does not normalise
            dropout_keys=(*_TRANSFORMER_DROPOUT, "head_dropout"),
            from_scratch=_TRANSFORMER_FROM_SCRATCH,
        ),
        ModelSpec(
            name="resnet18",
            summary="torchvision ResNet18 (1-channel stem) over an in-graph log-mel spectrogram",
            model_class=ResNet18ForEmotion,
            config_class=ResNetEmotionConfig,
            model_types=("ser-resnet18",),
            sizes={"tiny": {"n_mels": 32}, "base": {"n_mels": 64}},
            default_size="base",
            normalize=False,
            dropout_keys=("classifier_dropout",),
            from_scratch={},
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]
