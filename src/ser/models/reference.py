"""The PyTorch model as a Backend, so it is compared and benchmarked through the same interface.

Three ways of running it, the references the exported graphs are measured against: eager FP32,
eager under FP16 autocast (CUDA only: CPU autocast is bfloat16, a different number format), and
`torch.compile` (Inductor; its compilation happens in the first calls of each shape).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import numpy as np
import torch

from ser.bundle import graph_signature
from ser.models.waveform import WaveformClassifier
from ser.runtime.base import Backend, BackendError

PRECISIONS = ("fp32", "fp16")


class TorchBackend(Backend):
    def __init__(
        self,
        module: WaveformClassifier,
        num_labels: int,
        device: str = "cpu",
        precision: str = "fp32",
        compile: bool = False,
    ):
        super().__init__(graph_signature(num_labels)[0])
        if precision not in PRECISIONS:
            raise BackendError(f"pytorch: unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if precision == "fp16" and not device.startswith("cuda"):
            raise BackendError("pytorch: fp16 autocast needs a CUDA device (CPU autocast is bfloat16)")
        self.name = f"pytorch-compile-{device}" if compile else f"pytorch-{device}"
        self.module = module
        self.device = torch.device(device)
        self.precision = precision
        self.compile = compile
        self._run = module

    def _activate(self) -> None:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"{self.name}: torch sees no CUDA device")
        self.module.to(self.device).eval()
        self._run = torch.compile(self.module) if self.compile else self.module

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        autocast = (
            torch.autocast(self.device.type, dtype=torch.float16)
            if self.precision == "fp16"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            audio = torch.from_numpy(feeds["audio"]).to(self.device)
            lengths = torch.from_numpy(feeds["lengths"]).to(self.device)
            logits = self._run(audio, lengths).float().cpu().numpy()
        return {"logits": logits}

    def _deactivate(self) -> None:
        self._run = self.module
        self.module.to("cpu")
