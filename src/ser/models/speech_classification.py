"""The speech-classification head public emotion checkpoints carry outside transformers.

m3hrdadfi's soxan (`src/models.py`: `Wav2Vec2ForSpeechClassification`, `HubertForSpeechClassification`)
and audeering's dimensional model (`wav2vec2-large-robust-12-ft-emotion-msp-dim`, its card's
`EmotionModel` + `RegressionHead`) share one head: the encoder's last hidden state, pooled over the
frames by config.json's `pooling_mode` (mean, sum or max), then dropout → dense [H, H] → tanh →
dropout → out_proj [N, H]. Weights `wav2vec2.*` / `hubert.*`, `classifier.dense.*`,
`classifier.out_proj.*`; `classifier_proj_size` is not read. `problem_type: "regression"` makes the
outputs named dimensions (audeering: arousal, dominance, valence, no activation) rather than logits.

One deliberate difference: the originals pool over every frame of the batch, padding included; here a
clip is pooled over its own frames (the attention mask), so a padded batch answers as each clip alone,
which is what the original answers for a clip on its own. The classes carry the originals' names, so a
checkpoint's `architectures` finds them.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import HubertModel, HubertPreTrainedModel, Wav2Vec2Model, Wav2Vec2PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLING_MODES = ("mean", "sum", "max")
REGRESSION = "regression"


class SpeechClassificationHead(nn.Module):
    """pooled [batch, H] → [batch, N]: dropout, dense, tanh, dropout, out_proj (soxan's head)."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(getattr(config, "final_dropout", 0.1))
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.dense(self.dropout(pooled))
        return self.out_proj(self.dropout(torch.tanh(x)))


def pooling_mode(config) -> str:
    mode = getattr(config, "pooling_mode", "mean")
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling_mode {mode!r} is not one of {', '.join(POOLING_MODES)}")
    return mode


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """[batch, frames, H] over each row's valid frames (`mask` [batch, frames], bool) → [batch, H]."""
    weights = mask.to(hidden.dtype)[:, :, None]
    if mode == "max":
        return hidden.masked_fill(~mask[:, :, None], torch.finfo(hidden.dtype).min).max(dim=1).values
    total = (hidden * weights).sum(dim=1)
    return total if mode == "sum" else total / weights.sum(dim=1).clamp(min=1.0)


class _SpeechClassification:
    """The forward pass both families share; `base_model_prefix` names the encoder attribute."""

    config: object
    classifier: SpeechClassificationHead

    def _setup(self, config, encoder: nn.Module) -> None:
        self.pooling_mode = pooling_mode(config)
        setattr(self, self.base_model_prefix, encoder)
        self.classifier = SpeechClassificationHead(config)

    def freeze_feature_encoder(self) -> None:
        self.base_model.feature_extractor._freeze_parameters()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        hidden = self.base_model(input_values, attention_mask=attention_mask).last_hidden_state
        if attention_mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        else:
            mask = self._get_feature_vector_attention_mask(hidden.shape[1], attention_mask)
        logits = self.classifier(pool(hidden, mask, self.pooling_mode))
        loss = None
        if labels is not None:
            if self.config.problem_type == REGRESSION:
                loss = nn.functional.mse_loss(logits, labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class Wav2Vec2ForSpeechClassification(_SpeechClassification, Wav2Vec2PreTrainedModel):
    def __init__(self, config):
        Wav2Vec2PreTrainedModel.__init__(self, config)
        self._setup(config, Wav2Vec2Model(config))
        self.post_init()


class HubertForSpeechClassification(_SpeechClassification, HubertPreTrainedModel):
    def __init__(self, config):
        HubertPreTrainedModel.__init__(self, config)
        self._setup(config, HubertModel(config))
        self.post_init()
