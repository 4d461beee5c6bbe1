"""The model registry: one small declarative record per model family, looked up by name.

A family is one encoder with its front end and masking rules (wav2vec2, HuBERT, WavLM, Whisper, ...) and
the classification heads a checkpoint of it may carry: the stock Hugging Face `*ForSequenceClassification`
(or `*ForAudioClassification`) head and, for WavLM, ser's enhanced head. Which head a checkpoint has is the
checkpoint's to say (`config.json`'s `architectures`, else its `model_type`; see `resolve`), never the caller's.

Adding a family means adding a ModelSpec here (and a tiny fixture in the tests, which fail if one
is missing); export, validation and the CLI read everything they need from it. The records are data —
names, sizes, tolerances, head classes by name — so this module imports without torch (the CLI's
choices and `--help` come from it); a head's class is imported when a checkpoint needs it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ser.labels import LABELS

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

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
_LARGE_SHAPE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
_LARGE_TRANSFORMER = dict(_LARGE_SHAPE, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
_TRANSFORMER_SIZES = {"tiny": _TINY_TRANSFORMER, "base": _BASE_TRANSFORMER, "large": _LARGE_TRANSFORMER}
# data2vec-audio has no GroupNorm or stable-layer-norm variants, and `num_conv_pos_embeddings` counts
# its positional conv layers (5 at base), not a kernel size.
_DATA2VEC_SIZES = {
    "tiny": dict(_TINY_TRANSFORMER, num_conv_pos_embeddings=2, conv_pos_kernel_size=5),
    "base": _BASE_TRANSFORMER,
    "large": _LARGE_SHAPE,
}
_TRANSFORMER_DROPOUT = ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout")
# SpecAugment and LayerDrop regularise the fine-tuning of a pretrained encoder. From scratch they hurt: a
# small model learns to read the clip's length from how many frames were masked instead of the audio.
_TRANSFORMER_FROM_SCRATCH = {"mask_time_prob": 0.0, "layerdrop": 0.0}
# Whisper's encoder sizes: ser's tiny for tests, then the published base and large-v3 (128 mel bins). The decoder
# fields only shape the config file: WhisperForAudioClassification builds the encoder alone.
_WHISPER_TINY = dict(
    d_model=32,
    encoder_layers=2,
    encoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_layers=1,
    decoder_attention_heads=2,
    decoder_ffn_dim=64,
    classifier_proj_size=16,
)
_WHISPER_SIZES: dict[str, dict[str, Any]] = {
    "tiny": _WHISPER_TINY,
    "base": dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048, decoder_layers=6,
                 decoder_attention_heads=8, decoder_ffn_dim=2048),
    "large": dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, decoder_layers=32,
                  decoder_attention_heads=20, decoder_ffn_dim=5120, num_mel_bins=128, vocab_size=51866),
}  # fmt: skip

# What a family's model reads, computed inside the graph from the raw 16 kHz samples (ser.models.waveform):
WAVEFORM = "waveform"  # the samples themselves (`input_values`, normalised where the feature extractor does)
WHISPER_LOG_MEL = "whisper-log-mel"  # Whisper's log-mel spectrogram of the clip padded to 30 s (`input_features`)


@dataclass(frozen=True)
class Head:
    """A classification class a checkpoint may be, named as config.json's `architectures` names it."""

    name: str
    model_type: str  # its config class's model_type (what config.json says without `architectures`)
    module: str = "transformers"

    def load(self) -> type[PreTrainedModel]:
        return _import(self.module, self.name)


def _import(module: str, name: str) -> type:
    """A class named as data, imported when first needed (this module stays torch-free)."""
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class ExportPatches:
    """How ser rewrites a family's modules for export, declared with the family rather than found by class:
    the self-attention swapped for one fused operator (ser.models.attention), and the masked norms that make
    padding invisible (ser.models.waveform)."""

    attention: str | None = None  # "module:Class" of the family's self-attention layer; None: no attention
    attention_method: str = "forward"  # the method replaced: wav2vec2-style `forward`, or WavLM's attention core
    masked_group_norm: bool = False  # the first conv's per-channel GroupNorm (feat_extract_norm="group")
    positional_stack: bool = False  # a stack of positional convolutions, re-zeroed past each row's end

    def attention_class(self) -> type | None:
        if self.attention is None:
            return None
        return _import(*self.attention.split(":"))


def _attention(module: str, name: str, **patches: Any) -> ExportPatches:
    return ExportPatches(f"transformers.models.{module}:{name}", **patches)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    summary: str
    heads: tuple[Head, ...]  # the classification classes a checkpoint of this family may be
    encoders: tuple[str, ...]  # headless classes of the family (pretraining, CTC): fine-tuning starts a head
    sizes: dict[str, dict[str, Any]]  # size name → config overrides
    default_size: str
    normalize: bool  # zero-mean unit-variance waveform, when the checkpoint has no preprocessor config
    dropout_keys: tuple[str, ...]  # config fields that one training --dropout value sets
    from_scratch: dict[str, Any]  # config changes for training without a pretrained checkpoint
    patches: ExportPatches = ExportPatches()
    frontend: str = WAVEFORM  # what the model reads (WAVEFORM, WHISPER_LOG_MEL)
    encoder_prefix: str | None = None  # the encoder's weights' prefix in the head, where not base_model_prefix
    fp32_tolerance: float = 1e-3  # max |logit error| of an FP32 export against PyTorch
    fp16_tolerance: float = 5e-2  # the same for --fp16 (FP16 keeps ~3 significant digits)

    @property
    def model_class(self) -> type[PreTrainedModel]:
        """The head ser builds: for random weights, training from scratch, and on a headless encoder."""
        return self.heads[0].load()

    @property
    def config_class(self) -> type[PretrainedConfig]:
        return self.model_class.config_class

    @property
    def model_types(self) -> tuple[str, ...]:
        """config.json model_type values of this family."""
        return tuple(dict.fromkeys(head.model_type for head in self.heads))

    def head_named(self, architecture: str) -> Head | None:
        return next((head for head in self.heads if head.name == architecture), None)

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
        """The family's own head at `size` with random weights."""
        return self.model_class(self.config(size, labels)).eval()

    def size_of(self, config: PretrainedConfig) -> str:
        """Which named size a checkpoint's config has, or "custom"."""
        for size in self.sizes:
            reference = self.config(size)
            keys = ("hidden_size", "num_hidden_layers", "n_mels", "num_mel_bins")
            if all(getattr(config, k, None) == getattr(reference, k, None) for k in keys):
                return size
        return "custom"


def _speech_head(prefix: str, model_type: str) -> Head:
    """soxan's and audeering's speech-classification head (ser.models.speech_classification)."""
    return Head(f"{prefix}ForSpeechClassification", model_type, module="ser.models.speech_classification")


def _encoders(prefix: str, *heads: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{head}" for head in ("Model", "ForCTC", *heads))


_TRANSFORMER = dict(
    sizes=_TRANSFORMER_SIZES,
    default_size="base",
    dropout_keys=_TRANSFORMER_DROPOUT,
    from_scratch=_TRANSFORMER_FROM_SCRATCH,
)

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="wav2vec2",
            summary="Wav2Vec2ForSequenceClassification (mean pooling, optional weighted layer sum, linear head), "
            "or soxan/audeering's Wav2Vec2ForSpeechClassification (mean/sum/max pooling, dense-tanh head, "
            "classification or dimensional regression)",
            heads=(Head("Wav2Vec2ForSequenceClassification", "wav2vec2"), _speech_head("Wav2Vec2", "wav2vec2")),
            patches=_attention("wav2vec2.modeling_wav2vec2", "Wav2Vec2Attention", masked_group_norm=True),
            encoders=_encoders("Wav2Vec2", "ForPreTraining"),
            normalize=True,
            **_TRANSFORMER,
        ),
        ModelSpec(
            name="hubert",
            summary="HubertForSequenceClassification (mean pooling, linear head), or soxan's "
            "HubertForSpeechClassification",
            heads=(Head("HubertForSequenceClassification", "hubert"), _speech_head("Hubert", "hubert")),
            patches=_attention("hubert.modeling_hubert", "HubertAttention", masked_group_norm=True),
            encoders=_encoders("Hubert"),
            normalize=True,
            **{**_TRANSFORMER, "default_size": "large"},
        ),
        ModelSpec(
            name="wavlm",
            summary="WavLM: ser's enhanced head (weighted layer sum, attentive statistics pooling, MLP) "
            "or the stock WavLMForSequenceClassification",
            heads=(
                Head("WavLMForEmotion", "wavlm-emotion", module="ser.models.wavlm"),
                Head("WavLMForSequenceClassification", "wavlm"),
            ),
            patches=_attention(
                "wavlm.modeling_wavlm",
                "WavLMAttention",
                attention_method="torch_multi_head_self_attention",
                masked_group_norm=True,
            ),
            encoders=_encoders("WavLM"),
            normalize=False,  # microsoft/wavlm-base-plus's feature extractor does not normalise
            **{**_TRANSFORMER, "dropout_keys": (*_TRANSFORMER_DROPOUT, "head_dropout")},
        ),
        ModelSpec(
            name="data2vec-audio",
            summary="Data2VecAudioForSequenceClassification (mean pooling, linear head)",
            heads=(Head("Data2VecAudioForSequenceClassification", "data2vec-audio"),),
            patches=_attention("data2vec.modeling_data2vec_audio", "Data2VecAudioAttention", positional_stack=True),
            encoders=_encoders("Data2VecAudio"),
            normalize=True,
            **{**_TRANSFORMER, "sizes": _DATA2VEC_SIZES},
        ),
        ModelSpec(
            name="unispeech-sat",
            summary="UniSpeechSatForSequenceClassification (mean pooling, linear head)",
            heads=(Head("UniSpeechSatForSequenceClassification", "unispeech-sat"),),
            patches=_attention("unispeech_sat.modeling_unispeech_sat", "UniSpeechSatAttention", masked_group_norm=True),
            encoders=_encoders("UniSpeechSat", "ForPreTraining"),
            normalize=False,  # microsoft/unispeech-sat-base's feature extractor does not normalise
            **_TRANSFORMER,
        ),
        ModelSpec(
            name="whisper",
            summary="WhisperForAudioClassification: Whisper's encoder over its 30 s log-mel (80 or 128 mel bins), "
            "optional weighted layer sum, projector, mean over all 1,500 frames, linear head",
            heads=(Head("WhisperForAudioClassification", "whisper"),),
            patches=_attention("whisper.modeling_whisper", "WhisperAttention"),
            encoders=("WhisperModel", "WhisperForConditionalGeneration"),
            sizes=_WHISPER_SIZES,
            default_size="base",
            normalize=False,  # WhisperFeatureExtractor does not normalise unless asked per call
            dropout_keys=("dropout", "attention_dropout", "activation_dropout"),
            from_scratch={},
            frontend=WHISPER_LOG_MEL,
            encoder_prefix="encoder",
        ),
        ModelSpec(
            name="resnet18",
            summary="torchvision ResNet18 (1-channel stem) over an in-graph log-mel spectrogram",
            heads=(Head("ResNet18ForEmotion", "ser-resnet18", module="ser.models.resnet"),),
            encoders=(),
            sizes={"tiny": {"n_mels": 32}, "base": {"n_mels": 64}},
            default_size="base",
            normalize=False,
            dropout_keys=("classifier_dropout",),
            from_scratch={},
        ),
    )
}


SIZES: tuple[str, ...] = tuple(dict.fromkeys(size for spec in REGISTRY.values() for size in spec.sizes))


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


@dataclass(frozen=True)
class Architecture:
    """What a checkpoint's config says it is: its family, and its head class (None: a headless encoder)."""

    spec: ModelSpec
    head: type[PreTrainedModel] | None
    name: str  # the class name the checkpoint gave (or the one its model_type implies)


class UnknownArchitecture(ValueError):
    """A config whose architectures / model_type no registered family loads."""


def resolve(config: dict[str, Any]) -> Architecture:
    """The family and head class a checkpoint's config.json (as a dict) describes.

    `architectures[0]` decides where present: a family's head class, or one of its headless encoder
    classes. Without it, the `model_type` decides, and means the head whose config has that type.
    """
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if architectures:
        name = str(architectures[0])
        for spec in REGISTRY.values():
            head = spec.head_named(name)
            if head is not None:
                return Architecture(spec, head.load(), name)
            if name in spec.encoders:
                return Architecture(spec, None, name)
        family = next((s for s in REGISTRY.values() if model_type in s.model_types), None)
        if family is not None:
            raise UnknownArchitecture(
                f"architectures names {name}, which ser does not export; a {family.name} checkpoint must be one of "
                f"{', '.join(h.name for h in family.heads)} (or a headless {', '.join(family.encoders)} to "
                "fine-tune a head on)"
            )
        raise UnknownArchitecture(f"architectures names {name}, which is none of ser's families: {supported()}")
    for spec in REGISTRY.values():
        for head in spec.heads:
            if head.model_type == model_type:
                return Architecture(spec, head.load(), head.name)
    raise UnknownArchitecture(f"model_type {model_type!r} is none of ser's families: {supported()}")


def supported() -> str:
    return "; ".join(f"{s.name}: {', '.join(h.name for h in s.heads)}" for s in REGISTRY.values())
