"""INT8 quantization with ONNX Runtime's quantizer, and per-node sensitivity for the accuracy gate.

Modes (model path in, model path out):
- dynamic: MatMul/Gemm weights per-channel INT8, activations quantized per call. No calibration;
  Conv stays FP32 because ONNX Runtime's ConvInteger is slower than its FP32 Conv.
- static: QDQ graph with per-channel INT8 weights and UINT8 activations (the CPU's VNNI layout) for
  MatMul, Gemm and Conv, so the convolutional feature encoder runs in INT8 too. Activation ranges
  come from real audio (minmax, entropy or percentile) and are cached, so re-quantizing with other
  nodes excluded does not re-calibrate.

`node_sensitivity` ranks the quantized nodes by how much error each adds to its own output,
comparing every node's output in the float and quantized graphs on a few clips.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from ser.export.calibration import AudioFolderReader, Feeds
from ser.export.optimize import save_model

log = logging.getLogger(__name__)

MODES = ("dynamic", "static")
METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
OP_TYPES = {"dynamic": ("MatMul", "Gemm"), "static": ("MatMul", "Gemm", "Conv")}


@dataclass(frozen=True)
class Int8Options:
    mode: str  # dynamic | static
    method: str = "minmax"  # static only: minmax | entropy | percentile
    per_channel: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"--int8 {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.method not in METHODS:
            raise ValueError(f"--calibration-method {self.method!r}: choose one of {', '.join(METHODS)}")


def quantizable_nodes(model: onnx.ModelProto, mode: str) -> list[str]:
    """Names of the nodes `mode` would quantize: its op types with a constant (initializer) weight."""
    initializers = {init.name for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in OP_TYPES[mode] and len(node.input) > 1 and node.input[1] in initializers
    ]


class Quantizer:
    """Quantizes one float graph repeatedly with different nodes kept in FP32.

    Static calibration runs once (the first call) and its ranges are reused from a cache file.
    """

    def __init__(
        self,
        float_path: Path,
        options: Int8Options,
        calibration: AudioFolderReader | None,
        work_dir: Path,
        on_feed: Callable[[], None] | None = None,
    ):
        if options.mode == "static" and calibration is None:
            raise ValueError("--int8 static needs calibration audio: pass --calibration-data DIR")
        self.float_path = float_path
        self.options = options
        self.nodes = quantizable_nodes(onnx.load(str(float_path), load_external_data=False), options.mode)
        self.calibration = calibration
        self.on_feed = on_feed
        self._cache = work_dir / "calibration.json"

    def quantize(self, out: Path, exclude: Sequence[str] = ()) -> None:
        # Only nodes with a constant weight: a MatMul of two activations is a statistic (the masked
        # GroupNorm's mean and variance over time) and loses too much in 8 bits.
        nodes = [name for name in self.nodes if name not in set(exclude)]
        if not nodes:  # ONNX Runtime reads an empty list as "quantize everything"
            save_model(onnx.load(str(self.float_path)), out)
            return
        common = dict(
            op_types_to_quantize=list(OP_TYPES[self.options.mode]),
            per_channel=self.options.per_channel,
            nodes_to_quantize=nodes,
            use_external_data_format=self.float_path.with_name(self.float_path.name + ".data").exists(),
        )
        if self.options.mode == "dynamic":
            quantize_dynamic(self.float_path, out, weight_type=QuantType.QInt8, **common)
            return
        assert self.calibration is not None
        reader = None if self._cache.is_file() else self.calibration.onnxruntime_reader(self.on_feed)
        quantize_static(
            self.float_path,
            out,
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=METHODS[self.options.method],
            calibration_cache_path=self._cache,
            **common,
        )


def _with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of `model` that also returns the tensors `names` (as float32)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name for o in copy.graph.output}
    for name in names:
        if name not in existing:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return copy


def _run_with_outputs(model_path: Path, names: list[str], feeds: list[Feeds], work_dir: Path) -> list[dict]:
    import onnxruntime as ort

    augmented = _with_outputs(onnx.load(str(model_path)), names)
    path = work_dir / f"{model_path.stem}.outputs.onnx"
    save_model(augmented, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [dict(zip(names, session.run(names, feed), strict=True)) for feed in feeds]


def node_sensitivity(float_path: Path, quant_path: Path, nodes: Sequence[str], feeds: list[Feeds]) -> dict[str, float]:
    """Error each quantized node adds: relative squared error of its output minus that of its input.

    Both graphs keep the float graph's tensor names at node boundaries, so every node's input and
    output can be read from both and compared on the same clips. Higher is more sensitive.
    """
    model = onnx.load(str(float_path))
    by_name = {node.name: node for node in model.graph.node}
    pairs = {name: (by_name[name].input[0], by_name[name].output[0]) for name in nodes if name in by_name}
    tensors = sorted({t for pair in pairs.values() for t in pair})
    with tempfile.TemporaryDirectory(prefix="ser-sensitivity-") as tmp:
        reference = _run_with_outputs(float_path, tensors, feeds, Path(tmp))
        quantized = _run_with_outputs(quant_path, tensors, feeds, Path(tmp))

    def relative_error(name: str) -> float:
        noise = sum(float(np.sum((q[name] - r[name]) ** 2)) for q, r in zip(quantized, reference, strict=True))
        signal = sum(float(np.sum(r[name] ** 2)) for r in reference)
        return noise / max(signal, 1e-30)

    return {name: relative_error(out) - relative_error(inp) for name, (inp, out) in pairs.items()}
