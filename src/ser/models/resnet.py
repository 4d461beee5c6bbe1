"""torchvision's ResNet18 (one-channel stem) over a log-mel spectrogram computed inside the model.

Raw audio goes in, so the exported graph has the same contract as the transformer models. The
time axis is masked before every convolution, which makes a right-padded batch give each row the
answer it gets alone: at every stage, positions past a row's valid frames are zero, exactly the
zero padding the convolution would see at the end of the shorter clip.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock
from transformers import AutoConfig, AutoModelForAudioClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from ser.audio import SAMPLE_RATE
from ser.models.frontends import LogMel, length_mask


class ResNetEmotionConfig(PretrainedConfig):
    model_type = "ser-resnet18"

    def __init__(
        self, n_mels: int = 64, n_fft: int = 400, hop_length: int = 160, classifier_dropout: float = 0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.n_mels, self.n_fft, self.hop_length = n_mels, n_fft, hop_length
        self.classifier_dropout = classifier_dropout


def _halve(lengths: torch.Tensor) -> torch.Tensor:
    """Valid length after a stride-2 conv or pool with 'same'-style padding: ceil(L / 2)."""
    return (lengths - 1) // 2 + 1


def _mask_time(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return x * length_mask(lengths, x.shape[-1]).to(x.dtype)[:, None, None, :]


class ResNet18ForEmotion(PreTrainedModel):
    config_class = ResNetEmotionConfig
    main_input_name = "input_values"

    def __init__(self, config: ResNetEmotionConfig):
        super().__init__(config)
        self.frontend = LogMel(SAMPLE_RATE, config.n_fft, config.hop_length, config.n_mels)
        self.resnet = resnet18(num_classes=config.num_labels)
        self.resnet.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.dropout = nn.Dropout(config.classifier_dropout)  # no weights: checkpoints load either way
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """torchvision already initialised the network; nothing for transformers to redo."""

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            lengths = torch.full(input_values.shape[:1], input_values.shape[1], device=input_values.device)
        else:
            lengths = attention_mask.sum(dim=1)
        frames = self.frontend.frame_lengths(lengths)
        x = (self.frontend(input_values, lengths)[:, None] + 4.0) / 4.0  # [batch, 1, mels, frames], ~unit scale
        x = _mask_time(x, frames)
        r = self.resnet
        frames = _halve(frames)
        x = _mask_time(r.relu(r.bn1(r.conv1(x))), frames)
        frames = _halve(frames)
        x = _mask_time(r.maxpool(x), frames)  # inputs are ≥ 0 after ReLU, so zeros never win the max
        for stage in (r.layer1, r.layer2, r.layer3, r.layer4):
            for block in stage:
                x, frames = _masked_block(block, x, frames)
        pooled = x.sum(dim=(2, 3)) / (frames.to(x.dtype) * x.shape[2])[:, None]
        logits = r.fc(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _masked_block(block: BasicBlock, x: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BasicBlock.forward with the time axis re-masked before its second convolution and after."""
    out_frames = _halve(frames) if block.stride != 1 else frames
    out = _mask_time(block.relu(block.bn1(block.conv1(x))), out_frames)
    out = block.bn2(block.conv2(out))
    identity = block.downsample(x) if block.downsample is not None else x
    return _mask_time(block.relu(out + identity), out_frames), out_frames


AutoConfig.register(ResNetEmotionConfig.model_type, ResNetEmotionConfig)
AutoModelForAudioClassification.register(ResNetEmotionConfig, ResNet18ForEmotion)
