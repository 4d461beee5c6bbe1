"""WavLM with the enhanced classifier head that scored best on the emotion data.

The head: a learnable softmax-weighted sum of all hidden layers (emotion lives in the middle
layers as much as the top), attentive statistics pooling over valid frames (mean and standard
deviation weighted by learnt frame attention), then an MLP with LayerNorm and dropout.
A PreTrainedModel, so `save_pretrained` / `from_pretrained` and hub ids work as for the others;
it registers its own model type so `from_pretrained("microsoft/wavlm-base-plus")` loads the
encoder and starts a fresh head.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForAudioClassification,
    WavLMConfig,
    WavLMModel,
    WavLMPreTrainedModel,
)
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput


class WavLMEmotionConfig(WavLMConfig):
    model_type = "wavlm-emotion"

    def __init__(self, head_hidden_size: int = 256, head_dropout: float = 0.2, attention_size: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.head_hidden_size = head_hidden_size
        self.head_dropout = head_dropout
        self.attention_size = attention_size


class AttentiveStatsPooling(nn.Module):
    """[batch, frames, hidden] + frame mask → [batch, 2 * hidden]: attention-weighted mean and std."""

    def __init__(self, hidden_size: int, attention_size: int):
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(hidden_size, attention_size), nn.Tanh(), nn.Linear(attention_size, 1))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.attention(hidden).squeeze(-1)  # [batch, frames]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)
        mean = (weights * hidden).sum(dim=1)
        variance = (weights * hidden * hidden).sum(dim=1) - mean * mean
        return torch.cat([mean, torch.sqrt(variance.clamp(min=1e-6))], dim=-1)


class WavLMForEmotion(WavLMPreTrainedModel):
    config_class = WavLMEmotionConfig

    def __init__(self, config: WavLMEmotionConfig):
        # LayerDrop would leave out a skipped layer's hidden state, and the weighted layer sum needs them all.
        config.layerdrop = 0.0
        # Started from a plain WavLM encoder (microsoft/wavlm-base-plus), the config still says "wavlm";
        # saved checkpoints must say what they hold, so that AutoModel rebuilds this head.
        config.model_type = WavLMEmotionConfig.model_type
        super().__init__(config)
        self.wavlm = WavLMModel(config)
        num_layers = config.num_hidden_layers + 1  # the transformer layers plus their input
        self.layer_weights = nn.Parameter(torch.zeros(num_layers))
        self.pooling = AttentiveStatsPooling(config.hidden_size, config.attention_size)
        self.classifier = nn.Sequential(
            nn.Linear(2 * config.hidden_size, config.head_hidden_size),
            nn.LayerNorm(config.head_hidden_size),
            nn.GELU(),
            nn.Dropout(config.head_dropout),
            nn.Linear(config.head_hidden_size, config.num_labels),
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self:
            init.zeros_(self.layer_weights)  # equal weight to every layer at the start

    def freeze_feature_encoder(self) -> None:
        self.wavlm.feature_extractor._freeze_parameters()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs = self.wavlm(input_values, attention_mask=attention_mask, output_hidden_states=True)
        hidden = torch.stack(outputs.hidden_states, dim=1)  # [batch, layers, frames, hidden]
        weights = torch.softmax(self.layer_weights, dim=0)
        hidden = (hidden * weights[None, :, None, None]).sum(dim=1)
        if attention_mask is None:
            frame_mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        else:
            frame_mask = self.wavlm._get_feature_vector_attention_mask(hidden.shape[1], attention_mask)
        logits = self.classifier(self.pooling(hidden, frame_mask))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(WavLMEmotionConfig.model_type, WavLMEmotionConfig)
AutoModelForAudioClassification.register(WavLMEmotionConfig, WavLMForEmotion)
