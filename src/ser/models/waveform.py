"""WaveformClassifier: any registered model behind the graph contract (audio, lengths) → logits.

This module is what gets exported and what exports are validated against. It moves into the
graph everything a Hugging Face feature extractor would do outside it (the family's front end:
waveform normalisation and padding, or Whisper's 30 s log-mel), and makes padding invisible:
normalisation and the first GroupNorm see valid samples only, a stack of positional convolutions
(data2vec-audio) sees zeros past each row's end, and the model gets the attention mask that zeroes
padded frames and masks attention and pooling.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ser.audio import SAMPLE_RATE
from ser.models.frontends import (
    MaskedGroupNormConvLayer,
    MaskedPositionalConvStack,
    WhisperLogMel,
    length_mask,
    masked_normalize,
)
from ser.models.registry import WAVEFORM, WHISPER_LOG_MEL, ExportPatches

WHISPER_HOP = 160  # samples per log-mel frame; Whisper's encoder halves the frames once more


class WaveformInput(nn.Module):
    """The wav2vec2-style families' input: the samples (zero-mean, unit-variance where the feature extractor
    normalises) and the attention mask of the valid samples."""

    def __init__(self, normalize: bool):
        super().__init__()
        self.normalize = normalize
        self.max_samples: int | None = None  # the whole clip is heard

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = length_mask(lengths, audio.shape[1])
        audio = masked_normalize(audio, lengths) if self.normalize else audio * mask.to(audio.dtype)
        return {"input_values": audio, "attention_mask": mask.long()}


def whisper_window_samples(config: PretrainedConfig) -> int:
    """The samples a Whisper encoder hears: 2 log-mel frames per position (its second convolution has stride 2)."""
    return config.max_source_positions * 2 * WHISPER_HOP


class WhisperInput(nn.Module):
    """Whisper's input: the log-mel of the clip cut or padded to the encoder's window (30 s for every published
    size: 1,500 positions × 2 × 160 samples). No attention mask: Whisper has none, and its mean runs over the
    padding (see WhisperLogMel)."""

    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.max_samples = whisper_window_samples(config)
        self.log_mel = WhisperLogMel(config.num_mel_bins, self.max_samples, hop_length=WHISPER_HOP)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_features": self.log_mel(audio, lengths)}


def front_end(frontend: str, model: PreTrainedModel, normalize: bool) -> WaveformInput | WhisperInput:
    """The in-graph front end a family names on its spec (ModelSpec.frontend)."""
    if frontend == WAVEFORM:
        return WaveformInput(normalize)
    if frontend == WHISPER_LOG_MEL:
        return WhisperInput(model.config)
    raise ValueError(f"unknown front end {frontend!r}")


class WaveformClassifier(nn.Module):
    def __init__(
        self,
        model: PreTrainedModel,
        normalize: bool,
        patches: ExportPatches,
        embedding: bool = False,
        frontend: str = WAVEFORM,
    ):
        """`model` takes what `frontend` makes of the audio (ModelSpec.frontend) and returns `.logits`;
        `normalize` mirrors the checkpoint's feature extractor (`do_normalize`); `patches` are its family's
        (ModelSpec.patches). With `embedding`, forward also returns what the head's last stage reads: the pooled
        representation (see `classifier_of`)."""
        super().__init__()
        self.model = model.eval()
        self.frontend = front_end(frontend, model, normalize)
        self.patches = patches
        self.embedding = embedding
        self._pooled: list[torch.Tensor] | None = None  # a list only while this wrapper's forward runs
        if embedding:
            classifier_of(model).register_forward_pre_hook(self._capture)
        self.group_norm: MaskedGroupNormConvLayer | None = None
        if patches.masked_group_norm and model.config.feat_extract_norm == "group":
            layers = model.base_model.feature_extractor.conv_layers
            if not isinstance(layers[0], MaskedGroupNormConvLayer):  # the same model wrapped twice
                layers[0] = MaskedGroupNormConvLayer(layers[0])
            self.group_norm = layers[0]
        self.positional: MaskedPositionalConvStack | None = None
        if patches.positional_stack:
            encoder = model.base_model.encoder
            if not isinstance(encoder.pos_conv_embed, MaskedPositionalConvStack):
                encoder.pos_conv_embed = MaskedPositionalConvStack(encoder.pos_conv_embed)
            self.positional = encoder.pos_conv_embed

    def _capture(self, _: nn.Module, args: tuple) -> None:
        if self._pooled is not None:  # the model run through this wrapper, not on its own
            self._pooled.append(args[0])

    @property
    def max_input_s(self) -> float | None:
        """How much of a clip the model hears (Whisper: its 30 s window, the rest cut as its feature extractor
        cuts it), or None: all of it."""
        samples = self.frontend.max_samples
        return None if samples is None else samples / SAMPLE_RATE

    @property
    def embedding_size(self) -> int | None:
        """Width of the embedding output, or None without one."""
        if not self.embedding:
            return None
        first = next(m for m in classifier_of(self.model).modules() if isinstance(m, nn.Linear))
        return first.in_features

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """audio: float32 [batch, samples] at 16 kHz, right-padded; lengths: int64 [batch] → logits [batch, labels]
        (with `embedding`: and the embedding [batch, width])."""
        inputs = self.frontend(audio, lengths)
        if self.group_norm is not None:
            self.group_norm.frame_lengths = self.group_norm.output_lengths(lengths)
        if self.positional is not None:
            self.positional.frame_lengths = self.model.base_model._get_feat_extract_output_lengths(lengths)
        self._pooled = []
        try:
            logits = self.model(**inputs).logits
            return (logits, self._pooled[-1]) if self.embedding else logits
        finally:
            self._pooled = None
            for module in (self.group_norm, self.positional):
                if module is not None:
                    module.frame_lengths = None


def classifier_of(model: PreTrainedModel) -> nn.Module:
    """The head's last stage, whose input is the clip's pooled representation: `classifier` (transformers' Linear
    over the pooled projector output; soxan's dense-tanh head over the pooled hidden state; ser's WavLM MLP over
    attentive statistics), or the ResNet's `fc` over its pooled feature map."""
    resnet = getattr(model, "resnet", None)
    return resnet.fc if resnet is not None else model.classifier
