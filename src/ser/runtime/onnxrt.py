"""ONNX Runtime backend: a bundle's graph on the CPU or, with onnxruntime-gpu, the CUDA provider."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ser.bundle import TensorSpec
from ser.runtime.base import Backend, BackendError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def available_devices() -> list[str]:
    """The devices this machine's onnxruntime build can run on."""
    import onnxruntime as ort

    return [device for device, provider in PROVIDERS.items() if provider in ort.get_available_providers()]


class OnnxRuntimeBackend(Backend):
    def __init__(
        self,
        onnx_path: str | Path,
        input_spec: tuple[TensorSpec, ...],
        device: str = "cpu",
        threads: int | None = None,
    ):
        super().__init__(input_spec)
        if device not in PROVIDERS:
            raise BackendError(f"onnxruntime: unknown device {device!r}; choose one of {sorted(PROVIDERS)}")
        self.name = f"onnxruntime-{device}"
        self.onnx_path = Path(onnx_path)
        self.device = device
        self.threads = threads
        self._session = None
        self._output_names: list[str] = []

    def _activate(self) -> None:
        import onnxruntime as ort

        if self.device not in available_devices():
            raise BackendError(
                f"{self.name}: this onnxruntime build has no {PROVIDERS[self.device]} "
                f"(available: {ort.get_available_providers()}); install onnxruntime-gpu for CUDA"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        providers = [PROVIDERS[self.device]] + (["CPUExecutionProvider"] if self.device != "cpu" else [])
        self._session = ort.InferenceSession(str(self.onnx_path), sess_options=options, providers=providers)
        self._output_names = [o.name for o in self._session.get_outputs()]

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._session is not None
        return dict(zip(self._output_names, self._session.run(self._output_names, dict(feeds)), strict=True))

    def _deactivate(self) -> None:
        self._session = None
