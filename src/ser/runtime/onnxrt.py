"""ONNX Runtime backend: a bundle's graph on the CPU or, with onnxruntime-gpu, the CUDA provider or
the TensorRT provider (which compiles what TensorRT takes and leaves the rest to CUDA).

On a GPU, a call goes through an IOBinding: inputs are bound from host memory, the outputs are
left on the device for ONNX Runtime to allocate there, and copied back once after the run.

onnxruntime-gpu lists its CUDA and TensorRT providers wherever it is installed, and a session whose
provider cannot start (a CUDA, cuDNN or TensorRT library missing, no GPU) quietly runs on the CPU
instead. So a device counts as available only when its provider's library loads and the driver sees a
GPU, and a session that did not get the provider it asked for is refused: CPU figures are never
reported as GPU ones."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ser.bundle import ORT_TENSORRT_CACHE, TensorSpec
from ser.runtime.base import Backend, BackendError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def available_devices() -> list[str]:
    """The devices ONNX Runtime can really run on here."""
    return [device for device in PROVIDERS if device_problem(device) is None]


@functools.cache
def device_problem(device: str) -> str | None:
    """Why ONNX Runtime cannot run on `device` here, or None when it can."""
    import onnxruntime as ort

    provider = PROVIDERS[device]
    if provider not in ort.get_available_providers():
        return f"this onnxruntime build has no {provider} (install onnxruntime-gpu)"
    if device == "cpu":
        return None
    if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from the nvidia-* wheels, for processes without torch
        with contextlib.redirect_stdout(io.StringIO()):  # it prints each library it misses; the load below says why
            ort.preload_dlls()
    capi = Path(ort.__file__).parent / "capi"
    for name in ("cuda", "tensorrt") if device == "tensorrt" else ("cuda",):
        library = capi / (
            f"onnxruntime_providers_{name}.dll" if os.name == "nt" else f"libonnxruntime_providers_{name}.so"
        )
        if library.exists():
            try:
                ctypes.CDLL(str(library))
            except OSError as error:
                return f"{provider} cannot load: {error}"
    return _no_gpu()


def _no_gpu() -> str | None:
    """Why the CUDA driver offers no GPU, or None when it offers one."""
    try:
        driver = ctypes.CDLL("nvcuda.dll" if os.name == "nt" else "libcuda.so.1")
    except OSError as error:
        return f"no NVIDIA driver here ({error})"
    count = ctypes.c_int(0)
    code = driver.cuInit(0) or driver.cuDeviceGetCount(ctypes.byref(count))
    if code:
        return f"the NVIDIA driver offers no usable GPU (CUDA error {code})"
    return None if count.value else "the NVIDIA driver sees no GPU"


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
        self.engine_cache = Path(engine_cache) if engine_cache else self.onnx_path.parent / ORT_TENSORRT_CACHE
        self._session = None
        self._output_names: list[str] = []

    def _activate(self) -> None:
        import onnxruntime as ort

        problem = device_problem(self.device)
        if problem is not None:
            raise BackendError(f"{self.name}: {problem}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(self.onnx_path), sess_options=options, providers=self._providers())
        if session.get_providers()[0] != PROVIDERS[self.device]:
            raise BackendError(
                f"{self.name}: ONNX Runtime could not start its {PROVIDERS[self.device]} and would run on "
                f"{session.get_providers()[0]} instead; its log above says why"
            )
        session.disable_fallback()  # a provider failing mid-run raises rather than moving to the CPU
        self._session = session
        self._output_names = [o.name for o in session.get_outputs()]

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
