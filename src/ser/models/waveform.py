"""WaveformClassifier: any of the four models behind the graph contract (audio, lengths) → logits.

This module is what gets exported and what exports are validated against. It moves into the
graph everything a Hugging Face feature extractor would do outside it (waveform normalisation,
padding), and makes padding invisible: normalisation and the first GroupNorm see valid samples
only, a stack of positional convolutions (data2vec-audio) sees zeros past each row's end, and the
model gets the attention mask that zeroes padded frames and masks attention and pooling.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from ser.models.frontends import (
    MaskedGroupNormConvLayer,
    MaskedPositionalConvStack,
    length_mask,
    masked_normalize,
)


class WaveformClassifier(nn.Module):
    def __init__(self, model: PreTrainedModel, normalize: bool):
        """`model` takes (input_values, attention_mask) and returns `.logits`; `normalize` mirrors
        the checkpoint's feature extractor (`do_normalize`)."""
        super().__init__()
        self.model = model.eval()
        self.normalize = normalize
        self.group_norm: MaskedGroupNormConvLayer | None = None
        encoder = getattr(model.base_model, "feature_extractor", None)
        if encoder is not None and getattr(model.config, "feat_extract_norm", None) == "group":
            first = encoder.conv_layers[0]
            if not isinstance(first, MaskedGroupNormConvLayer):
                first = MaskedGroupNormConvLayer(first)
                encoder.conv_layers[0] = first
            self.group_norm = first
        self.positional: MaskedPositionalConvStack | None = None
        transformer = getattr(model.base_model, "encoder", None)
        stack = getattr(transformer, "pos_conv_embed", None)
        if isinstance(stack, MaskedPositionalConvStack):
            self.positional = stack
        elif isinstance(getattr(stack, "layers", None), nn.ModuleList) and len(stack.layers) > 1:
            self.positional = transformer.pos_conv_embed = MaskedPositionalConvStack(stack)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """audio: float32 [batch, samples] at 16 kHz, right-padded; lengths: int64 [batch] → logits [batch, labels]."""
        mask = length_mask(lengths, audio.shape[1])
        audio = masked_normalize(audio, lengths) if self.normalize else audio * mask.to(audio.dtype)
        if self.group_norm is not None:
            self.group_norm.frame_lengths = self.group_norm.output_lengths(lengths)
        if self.positional is not None:
            self.positional.frame_lengths = self.model.base_model._get_feat_extract_output_lengths(lengths)
        try:
            return self.model(input_values=audio, attention_mask=mask.long()).logits
        finally:
            for module in (self.group_norm, self.positional):
                if module is not None:
                    module.frame_lengths = None
