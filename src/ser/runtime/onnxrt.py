"""ONNX Runtime backend: a bundle's graph on the CPU or, with onnxruntime-gpu, the CUDA provider or
the TensorRT provider (which compiles what TensorRT takes and leaves the rest to CUDA).

On a GPU, a call goes through an IOBinding: inputs are bound from host memory, the outputs are
left on the device for ONNX Runtime to allocate there, and copied back once after the run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ser.bundle import TensorSpec
from ser.runtime.base import Backend, BackendError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


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
        engine_cache: str | Path | None = None,
    ):
        super().__init__(input_spec)
        if device not in PROVIDERS:
            raise BackendError(f"onnxruntime: unknown device {device!r}; choose one of {sorted(PROVIDERS)}")
        self.name = f"onnxruntime-{device}"
        self.onnx_path = Path(onnx_path)
        self.device = device
        self.threads = threads
        # TensorRT provider: where its compiled engines are kept between sessions (default: beside the graph)
        self.engine_cache = Path(engine_cache) if engine_cache else self.onnx_path.parent / "ort-tensorrt-cache"
        self._session = None
        self._output_names: list[str] = []

    def _activate(self) -> None:
        import onnxruntime as ort

        if self.device not in available_devices():
            raise BackendError(
                f"{self.name}: this onnxruntime build has no {PROVIDERS[self.device]} "
                f"(available: {ort.get_available_providers()}); install onnxruntime-gpu (and TensorRT's libraries for "
                "its TensorRT provider)"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(self.onnx_path), sess_options=options, providers=self._providers())
        self._output_names = [o.name for o in self._session.get_outputs()]

    def _providers(self) -> list:
        if self.device == "cpu":
            return ["CPUExecutionProvider"]
        if self.device == "cuda":
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.engine_cache.mkdir(parents=True, exist_ok=True)
        tensorrt = {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(self.engine_cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(self.engine_cache),
        }  # precision stays the graph's: an FP16 bundle runs FP16, an FP32 one FP32
        return [("TensorrtExecutionProvider", tensorrt), "CUDAExecutionProvider", "CPUExecutionProvider"]

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._session is not None
        if self.device == "cpu":
            return dict(zip(self._output_names, self._session.run(self._output_names, dict(feeds)), strict=True))
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self._output_names:
            binding.bind_output(name, "cuda")
        self._session.run_with_iobinding(binding)
        return dict(zip(self._output_names, binding.copy_outputs_to_cpu(), strict=True))

    def _deactivate(self) -> None:
        self._session = None
