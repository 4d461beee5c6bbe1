"""The PyTorch model as a Backend, so it is compared and benchmarked through the same interface."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ser.bundle import graph_signature
from ser.models.waveform import WaveformClassifier
from ser.runtime.base import Backend


class TorchBackend(Backend):
    def __init__(self, module: WaveformClassifier, num_labels: int, device: str = "cpu"):
        super().__init__(graph_signature(num_labels)[0])
        self.name = f"pytorch-{device}"
        self.module = module
        self.device = torch.device(device)

    def _activate(self) -> None:
        self.module.to(self.device).eval()

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            audio = torch.from_numpy(feeds["audio"]).to(self.device)
            lengths = torch.from_numpy(feeds["lengths"]).to(self.device)
            return {"logits": self.module(audio, lengths).float().cpu().numpy()}

    def _deactivate(self) -> None:
        self.module.to("cpu")
