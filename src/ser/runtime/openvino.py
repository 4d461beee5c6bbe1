"""OpenVINO backend: the bundle's own ONNX graph, read and compiled by OpenVINO for this CPU.

OpenVINO reads ONNX directly, ONNX Runtime's fused operators included (MultiHeadAttention, BiasGelu,
SkipLayerNormalization), and runs a QDQ-quantized graph on its own INT8 kernels, so the same bundle runs on
either engine with nothing converted or added to it. Inference precision is pinned to f32: on CPUs with
AVX-512 BF16 or AMX OpenVINO's default would quietly compute an FP32 bundle in bfloat16. A QDQ graph is
lowered first to the form OpenVINO's INT8 kernels are written for (`lower_qdq`). An input shape that repeats
(a benchmark, fixed windows, a steady batch) gets a compile of its own for that shape, which OpenVINO fuses
further than the dynamic graph every other shape runs on (benchmarks/RESULTS.md). Its INT8 kernels are not
ONNX Runtime's, so an INT8 bundle runs here as verified only where its gate judged this backend, and the
gate judges it through this class (`ser.runtime.recognizer`, `ser.export.exporter`).
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ser.bundle import EMBEDDING, LOGITS, TensorSpec
from ser.runtime.base import Backend, BackendError

log = logging.getLogger(__name__)


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install 'ser[openvino]')"
    return None


def lower_qdq(model: Any) -> tuple[int, int]:
    """Rewrite, in place, how OpenVINO's ONNX frontend reads an activation's quantize/dequantize pair
    (FakeQuantize to 0..255, two Converts, a zero-point Subtract, a scale Multiply) into what its own INT8
    models carry. Returns (conv outputs left in float, pairs folded).

    - After a convolution the pair goes: ONNX Runtime needs it there to run the conv in INT8 (QLinearConv has an
      8-bit output), but OpenVINO computes an INT8 conv in float at its output anyway and would quantize it,
      convert it back in a reference kernel and subtract the zero point, only to quantize again before the
      next conv. Dropping it removes a rounding, so the answers move a little: the gate judges this backend.
    - Everywhere else the pair becomes one FakeQuantize from float to float (the same grid: same answers),
      which OpenVINO's low-precision passes fuse into the INT8 kernel that reads it, including the attention
      core, whose query and key ser's quantizer puts on a symmetric 8-bit grid (`ser.export.quantize`).
    """
    from openvino import opset13

    def constant(node: Any) -> np.ndarray | None:
        if node.get_type_name() == "Convert":
            node = node.input_value(0).get_node()
        return node.get_data().astype(np.float32) if node.get_type_name() == "Constant" else None

    def only_reader(node: Any, kind: str) -> Any:
        readers = list(node.output(0).get_target_inputs())
        if len(readers) == 1 and readers[0].get_node().get_type_name() == kind:
            return readers[0].get_node()
        return None

    floated = folded = 0
    for quantize in model.get_ordered_ops():
        if quantize.get_type_name() != "FakeQuantize":
            continue
        to_int = only_reader(quantize, "Convert")
        to_float = to_int and only_reader(to_int, "Convert")
        if to_float is None:
            continue  # already float to float (an IR's own), or read otherwise
        subtract = only_reader(to_float, "Subtract")
        zero_point = constant(subtract.input_value(1).get_node()) if subtract else np.float32(0)
        multiply = only_reader(subtract or to_float, "Multiply")
        scale = constant(multiply.input_value(1).get_node()) if multiply else None
        if zero_point is None or scale is None:
            continue
        source = quantize.input_value(0)
        producer = source.get_node()
        if producer.get_type_name() == "Add" and producer.input_value(1).get_node().get_type_name() == "Constant":
            producer = producer.input_value(0).get_node()  # past a conv's bias
        if producer.get_type_name() in ("Convolution", "GroupConvolution"):
            multiply.output(0).replace(source)
            floated += 1
            continue
        low, high, out_low, out_high = (constant(quantize.input_value(i).get_node()) for i in range(1, 5))
        if low is None or high is None or out_low is None or out_high is None:
            continue
        grid = opset13.fake_quantize(
            source, low, high, (out_low - zero_point) * scale, (out_high - zero_point) * scale,
            quantize.get_attributes()["levels"],
        )  # fmt: skip
        multiply.output(0).replace(grid.output(0))
        folded += 1
    if floated or folded:
        model.validate_nodes_and_infer_types()
    return floated, folded


def read_bundle_graph(onnx_path: str | Path) -> Any:
    """A bundle's ONNX graph as an OpenVINO model, its QDQ pairs lowered (`lower_qdq`)."""
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    lower_qdq(model)
    return model


class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextmanager
def _thread_signal_stack_kept() -> Iterator[None]:
    """Put back this thread's alternate signal stack after OpenVINO's CPU plugin is created.

    Each plugin (one per `ov.Core` that compiles) installs a signal stack of its own on the creating thread
    and, when freed, restores the one it found, which may be another plugin's, already unmapped. Freed in any
    order but last-made-first, that leaves the thread's stack dangling, and the next Python signal delivered
    there (SIGINT, or the SIGCHLD handler torch's DataLoader installs) kills the process with SIGSEGV.
    With the thread's own stack back in place, a plugin's teardown finds its stack unused and leaves the
    thread alone. Where the kernel refuses the old stack (too small once AMX state is enabled), the
    plugin's stays."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    before = _SignalStack()
    kept = libc.sigaltstack(None, ctypes.byref(before)) == 0
    try:
        yield
    finally:
        if kept and libc.sigaltstack(ctypes.byref(before), None) != 0:
            log.warning("openvino-cpu: could not restore this thread's signal stack (errno %d)", ctypes.get_errno())


def compile_for_cpu(model: Any, threads: int | None, perf_count: bool = False) -> Any:
    """`model` (an ONNX or IR path, or an OpenVINO model) compiled for this CPU: f32 pinned, latency hint,
    `threads` threads; `perf_count` keeps per-node timings (for profiling; it costs a little on every call)."""
    import openvino as ov

    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if perf_count:
        config["PERF_COUNT"] = True
    with _thread_signal_stack_kept():
        return ov.Core().compile_model(model if isinstance(model, ov.Model) else str(model), "CPU", config)


STATIC_SHAPES = 4  # shapes compiled for alone, at most, per backend
STATIC_MEMORY = 2 << 30  # bytes of resident memory those compiles may add in all (each packs its own weights)
STATIC_SHAPES_ENV = "SER_OPENVINO_STATIC_SHAPES"  # overrides STATIC_SHAPES where a backend is not told
STATIC_AFTER = 2  # calls at a shape before it gets its own compile: a shape seen once may never come again
_SEEN_LIMIT = 1024  # shapes counted at most (a service's ragged batches make new ones without end)


def _resident_bytes() -> int | None:
    """This process's resident memory (Linux), or None where it cannot be read."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class OpenVinoBackend(Backend):
    """A bundle's `model.onnx` on OpenVINO's CPU plugin with `threads` threads (None: OpenVINO decides).

    One compile takes any shape. OpenVINO runs a graph of fixed shape faster (its elementwise chains become
    one JIT kernel, fewer layout changes, no shape inference per call), so the first `static_shapes` input
    shapes to be seen `STATIC_AFTER` times are compiled again for that shape alone and run there from then
    on: the same graph and kernels, each compile with its own packed weights and buffers, so only while the
    memory they add (measured, or before the first: twice the graph's file) stays within STATIC_MEMORY.
    `static_shapes` None reads the environment's SER_OPENVINO_STATIC_SHAPES, else takes STATIC_SHAPES; 0
    turns it off."""

    name = "openvino-cpu"

    def __init__(
        self,
        onnx_path: str | Path,
        input_spec: tuple[TensorSpec, ...],
        threads: int | None = None,
        static_shapes: int | None = None,
    ):
        super().__init__(input_spec)
        if static_shapes is None:
            setting = os.environ.get(STATIC_SHAPES_ENV, str(STATIC_SHAPES))
            if not setting.isdigit():
                raise BackendError(f"{STATIC_SHAPES_ENV}={setting!r}: give a whole number of shapes (0: none)")
            static_shapes = int(setting)
        self.onnx_path = Path(onnx_path)
        self.threads = threads
        self.static_shapes = static_shapes
        self._model: Any = None  # the graph as read; each shape's compile is a clone of it, sharing its constants
        self._compiled: Any = None
        self._static: dict[tuple, Any] = {}  # input shapes → the compile for them alone
        self._seen: dict[tuple, int] = {}  # input shapes → calls so far, until compiled for
        self._static_cost = 0  # the most memory one shape's compile has added (a guess before the first)
        self._static_spent = 0  # memory all of them have added
        self._outputs: list[str] = []

    def _activate(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise BackendError(f"{self.name}: {reason}")
        self._model = read_bundle_graph(self.onnx_path)
        self._compiled = compile_for_cpu(self._model, self.threads)
        self._outputs = [port.get_any_name() for port in self._compiled.outputs]
        if LOGITS not in self._outputs or any(name not in (LOGITS, EMBEDDING) for name in self._outputs):
            raise BackendError(f"{self.onnx_path}: OpenVINO reads outputs {self._outputs}, not logits (and embedding)")
        weights = self.onnx_path.with_name(f"{self.onnx_path.name}.data")  # a very large model's external data
        self._static_cost = 2 * sum(path.stat().st_size for path in (self.onnx_path, weights) if path.exists())

    @property
    def static_shapes_compiled(self) -> list[tuple]:
        """The input shapes (audio's, lengths') that run on a compile of their own."""
        return list(self._static)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._compiled is not None
        inputs = {"audio": feeds["audio"], "lengths": feeds["lengths"]}
        shape = tuple(array.shape for array in inputs.values())
        compiled = self._static.get(shape)
        if compiled is None and self._earned(shape):
            compiled = self._compile_for(shape, inputs)
        if compiled is None:
            compiled = self._compiled
        result = compiled(inputs)
        ports = zip(self._outputs, compiled.outputs, strict=True)
        return {name: np.asarray(result[port], dtype=np.float32) for name, port in ports}

    def _earned(self, shape: tuple) -> bool:
        """Whether this shape, not compiled for yet, should be now: seen often enough, and room left."""
        if len(self._static) >= self.static_shapes or self._static_spent + self._static_cost > STATIC_MEMORY:
            return False
        seen = self._seen.get(shape, 0) + 1
        if seen >= STATIC_AFTER:
            self._seen.pop(shape, None)
            return True
        if len(self._seen) >= _SEEN_LIMIT:
            self._seen.clear()
        self._seen[shape] = seen
        return False

    def _compile_for(self, shape: tuple, inputs: Mapping[str, np.ndarray]) -> Any:
        """The graph compiled for this shape alone (its first call made, so its buffers count), or None."""
        before = _resident_bytes()
        try:
            model = self._model.clone()
            model.reshape({name: list(array.shape) for name, array in inputs.items()})
            compiled = compile_for_cpu(model, self.threads)
            compiled(inputs)
        except Exception as error:  # a graph OpenVINO will not fix to this shape: every shape stays dynamic
            log.warning("%s: OpenVINO cannot compile it for shape %s (%s); running it dynamic", self.onnx_path, shape,
                        str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)  # fmt: skip
            self.static_shapes = len(self._static)
            return None
        after = _resident_bytes()
        added = max(0, after - before) if after is not None and before is not None else self._static_cost
        self._static_cost = max(self._static_cost, added) if self._static else added
        self._static_spent += added
        self._static[shape] = compiled
        return compiled

    def _deactivate(self) -> None:
        self._model = self._compiled = None
        self._static.clear()
        self._seen.clear()
        self._static_spent = 0
