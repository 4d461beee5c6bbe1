"""OpenVINO backend: the bundle's own ONNX graph, read and compiled by OpenVINO for this CPU.

OpenVINO reads ONNX directly, ONNX Runtime's fused operators included (MultiHeadAttention, BiasGelu,
SkipLayerNormalization), and runs a QDQ-quantized graph on its own INT8 kernels, so the same bundle runs on
either engine with nothing converted or added to it. Inference precision is pinned to f32: on CPUs with
AVX-512 BF16 or AMX OpenVINO's default would quietly compute an FP32 bundle in bfloat16. Its INT8
kernels are not ONNX Runtime's, so an INT8 bundle runs here as verified only where its gate judged this
backend (`ser.runtime.recognizer`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ser.bundle import EMBEDDING, LOGITS, TensorSpec
from ser.runtime.base import Backend, BackendError


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install 'ser[openvino]')"
    return None


def compile_for_cpu(model: str | Path, threads: int | None, perf_count: bool = False) -> Any:
    """`model` (ONNX or OpenVINO IR) compiled for this CPU: f32 pinned, latency hint, `threads` threads;
    `perf_count` keeps per-node timings (for profiling; it costs a little on every call)."""
    import openvino as ov

    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if perf_count:
        config["PERF_COUNT"] = True
    return ov.Core().compile_model(str(model), "CPU", config)


class OpenVinoBackend(Backend):
    """A bundle's `model.onnx` on OpenVINO's CPU plugin with `threads` threads (None: OpenVINO decides)."""

    name = "openvino-cpu"

    def __init__(self, onnx_path: str | Path, input_spec: tuple[TensorSpec, ...], threads: int | None = None):
        super().__init__(input_spec)
        self.onnx_path = Path(onnx_path)
        self.threads = threads
        self._compiled: Any = None
        self._outputs: list[str] = []

    def _activate(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise BackendError(f"{self.name}: {reason}")
        self._compiled = compile_for_cpu(self.onnx_path, self.threads)
        self._outputs = [port.get_any_name() for port in self._compiled.outputs]
        if LOGITS not in self._outputs or any(name not in (LOGITS, EMBEDDING) for name in self._outputs):
            raise BackendError(f"{self.onnx_path}: OpenVINO reads outputs {self._outputs}, not logits (and embedding)")

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._compiled is not None
        result = self._compiled({"audio": feeds["audio"], "lengths": feeds["lengths"]})
        ports = zip(self._outputs, self._compiled.outputs, strict=True)
        return {name: np.asarray(result[port], dtype=np.float32) for name, port in ports}

    def _deactivate(self) -> None:
        self._compiled = None
