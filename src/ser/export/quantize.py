"""INT8 quantization with ONNX Runtime's quantizer, and per-node sensitivity for the accuracy gate.

Modes (model path in, model path out):
- dynamic: MatMul/Gemm weights per-channel INT8, activations quantized per call. No calibration;
  Conv stays FP32 because ONNX Runtime's ConvInteger is slower than its FP32 Conv.
- static: QDQ graph with per-channel INT8 weights and UINT8 activations (the CPU's VNNI layout) for
  MatMul, Gemm and Conv, so the convolutional feature encoder runs in INT8 too (all but its first conv,
  which reads the waveform: see `quantizable_nodes`). MatMul outputs stay float, and every float reader of
  an activation quantized for a MatMul reads the float tensor (`float_consumers_read_float`). Each attention
  core (MultiHeadAttention) reads its query and key on a symmetric 8-bit grid (`quantize_attention`), which
  OpenVINO runs as an INT8 product of the two and ONNX Runtime as a rounding before its float kernel.
  Activation ranges come from real audio (minmax, entropy or percentile; the query and key: their largest
  magnitude) and are cached, so re-quantizing with other nodes excluded does not re-calibrate.

`node_sensitivity` ranks the quantized nodes by the logit error each one causes when it alone is
quantized (against the float graph, on a batch of a few clips), in one session for QDQ graphs.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
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
from ser.runtime.cpu import TARGETS

MODES = ("dynamic", "static")
METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
OP_TYPES = {"dynamic": ("MatMul", "Gemm"), "static": ("MatMul", "Gemm", "Conv")}
ATTENTION = "MultiHeadAttention"  # ONNX Runtime's fused attention (ser.export.onnx): query, key, value, ...


@dataclass(frozen=True)
class Int8Options:
    mode: str  # dynamic | static
    method: str = "minmax"  # static only: minmax | entropy | percentile
    per_channel: bool = True
    # Symmetric signed INT8 activations (zero point 0), the only kind TensorRT's explicit quantization
    # takes; ONNX Runtime's CPU kernels are fastest with asymmetric unsigned ones.
    symmetric: bool = False
    # portable: 7-bit weights, whose u8s8 products ONNX Runtime computes exactly on every x86-64 CPU, so the
    # gate's verdict holds wherever the bundle runs; vnni: full 8-bit weights, exact only on VNNI CPUs
    # (ser.runtime.cpu). TensorRT (symmetric) takes its own INT8 and ignores the target.
    target: str = "portable"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"--int8 {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.target not in TARGETS:
            raise ValueError(f"--int8-target {self.target!r}: choose one of {', '.join(TARGETS)}")
        if self.method not in METHODS:
            raise ValueError(f"--calibration-method {self.method!r}: choose one of {', '.join(METHODS)}")

    @property
    def reduce_range(self) -> bool:
        return self.target == "portable" and not self.symmetric


def quantizable_nodes(model: onnx.ModelProto, mode: str) -> list[str]:
    """Names of the nodes `mode` would quantize: its op types with a constant (initializer) weight, except a
    convolution with one input channel (the first conv over the waveform, ResNet's stem over the log-mel).
    There INT8 buys nothing (a few MFLOP) and costs twice: the raw waveform in 8 bits is a 48 dB signal, and
    its output, the largest tensor of the graph, would need a dequantize before the FP32 GroupNorm. Static
    mode adds every attention node (its query and key: `quantize_attention`)."""
    initializers = {init.name: init for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if (mode == "static" and node.op_type == ATTENTION)
        or (
            node.op_type in OP_TYPES[mode]
            and len(node.input) > 1
            and node.input[1] in initializers
            and not (node.op_type == "Conv" and initializers[node.input[1]].dims[1] == 1)
        )
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
        model = onnx.load(str(float_path), load_external_data=False)
        self.nodes = quantizable_nodes(model, options.mode)
        self._attention = {  # attention node → its query and key
            node.name: (node.input[0], node.input[1])
            for node in model.graph.node
            if node.op_type == ATTENTION and node.name in self.nodes  # static mode only
        }
        self.calibration = calibration
        self.on_feed = on_feed
        self._cache = work_dir / "calibration.json"
        self._attention_cache = work_dir / "attention.json"

    def quantize(self, out: Path, exclude: Sequence[str] = ()) -> None:
        # Only nodes with a constant weight: a MatMul of two activations is a statistic (the masked
        # GroupNorm's mean and variance over time) and loses too much in 8 bits.
        excluded = set(exclude)
        attention = [name for name in self._attention if name not in excluded]
        nodes = [name for name in self.nodes if name not in excluded and name not in self._attention]
        if not nodes:  # ONNX Runtime reads an empty list as "quantize everything"
            save_model(onnx.load(str(self.float_path)), out)
        else:
            self._quantize(out, nodes)
        if attention:
            qdq = onnx.load(str(out))
            quantize_attention(qdq, attention, self._attention_magnitudes())
            save_model(qdq, out)

    def _attention_magnitudes(self) -> dict[str, float]:
        """The largest magnitude of every attention query and key over the calibration clips, from the float
        graph (computed once, then cached beside the activation ranges)."""
        if self._attention_cache.is_file():
            return json.loads(self._attention_cache.read_text())
        import onnxruntime as ort

        assert self.calibration is not None
        tensors = sorted({tensor for pair in self._attention.values() for tensor in pair})
        probe = onnx.load(str(self.float_path), load_external_data=False)
        probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(tensor) for tensor in tensors)
        path = self.float_path.with_name("attention-probe.onnx")  # beside the float graph: its external data
        onnx.save(probe, str(path))
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            largest = dict.fromkeys(tensors, 0.0)
            for feeds in self.calibration:
                for tensor, value in zip(tensors, session.run(tensors, feeds), strict=True):
                    largest[tensor] = max(largest[tensor], float(np.abs(value).max()))
        finally:
            path.unlink()
        self._attention_cache.write_text(json.dumps(largest))
        return largest

    def _quantize(self, out: Path, nodes: list[str]) -> None:
        common = dict(
            op_types_to_quantize=list(OP_TYPES[self.options.mode]),
            per_channel=self.options.per_channel,
            reduce_range=self.options.reduce_range,
            nodes_to_quantize=nodes,
            use_external_data_format=self.float_path.with_name(self.float_path.name + ".data").exists(),
        )
        if self.options.mode == "dynamic":
            quantize_dynamic(self.float_path, out, weight_type=QuantType.QInt8, **common)
            return
        assert self.calibration is not None
        histogram = self.options.method != "minmax"
        reader = None if self._cache.is_file() else self.calibration.onnxruntime_reader(self.on_feed, histogram)
        symmetric = self.options.symmetric
        quantize_static(
            self.float_path,
            out,
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=METHODS[self.options.method],
            calibration_cache_path=self._cache,
            # CPU engines: a MatMul answers in float (ONNX Runtime's MatMulIntegerToFloat, OpenVINO's
            # FullyConnected), so quantizing its output only adds a rounding and a Q/DQ pair before the bias
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True}
            if symmetric
            else {"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]},
            **common,
        )
        if not symmetric:
            qdq = onnx.load(str(out))
            if float_consumers_read_float(qdq, set(nodes)):
                save_model(qdq, out)


def quantize_attention(qdq: onnx.ModelProto, nodes: Sequence[str], magnitudes: dict[str, float]) -> None:
    """Give each attention node in `nodes` (MultiHeadAttention) its query and key through a quantize/dequantize
    pair on a symmetric signed 8-bit grid (zero point 0, scale: the tensor's largest calibrated magnitude / 127),
    in place.

    The two are multiplied together, so a symmetric grid keeps that product a plain INT8 one: OpenVINO then
    computes the attention scores in 8 bits (as NNCF quantizes them), ONNX Runtime rounds them and runs its
    float kernel. The value and the attention probabilities stay float."""
    chosen = set(nodes)
    ordered: list[onnx.NodeProto] = []
    for node in qdq.graph.node:
        if node.name in chosen and node.op_type == ATTENTION:
            for index in (0, 1):
                tensor = node.input[index]
                scale, zero = f"{tensor}/attention_scale", f"{tensor}/attention_zero_point"
                qdq.graph.initializer.extend([
                    onnx.numpy_helper.from_array(np.array(max(magnitudes[tensor], 1e-8) / 127, np.float32), scale),
                    onnx.numpy_helper.from_array(np.array(0, np.int8), zero),
                ])  # fmt: skip
                quantized, node.input[index] = f"{tensor}/attention_8bit", f"{tensor}/attention_grid"
                ordered.append(onnx.helper.make_node("QuantizeLinear", [tensor, scale, zero], [quantized]))
                ordered.append(onnx.helper.make_node("DequantizeLinear", [quantized, scale, zero], [node.input[index]]))
        ordered.append(node)
    del qdq.graph.node[:]
    qdq.graph.node.extend(ordered)


def float_consumers_read_float(qdq: onnx.ModelProto, quantized: set[str]) -> int:
    """Rewire, in place, every node of `qdq` that is not in `quantized` but reads an activation through a
    quantize/dequantize pair to read the float tensor itself, and drop the pairs left unread. Returns how
    many inputs it rewired.

    ONNX Runtime's quantizer gives a tensor one pair shared by all its readers, so the residual Add beside
    the Q/K/V MatMuls (and a Reshape, a LayerNorm) reads the 8-bit copy: a rounding the model never had, and
    a dequantize over the residual stream that the CPU engines compute in float on every call (OpenVINO in
    a reference kernel). A pair after a quantized node (a conv's output) stays: it is that node's output."""
    producers = {out: node for node in qdq.graph.node for out in node.output}
    rewired = 0
    for node in qdq.graph.node:
        if node.name in quantized or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, tensor in enumerate(node.input):
            dequantize = producers.get(tensor)
            if dequantize is None or dequantize.op_type != "DequantizeLinear":
                continue
            quantize = producers.get(dequantize.input[0])
            if quantize is None or quantize.op_type != "QuantizeLinear":
                continue  # a weight's dequantize
            source = producers.get(quantize.input[0])
            if source is not None and source.name in quantized:
                continue  # a quantized node's own output
            node.input[index] = quantize.input[0]
            rewired += 1
    if rewired:
        _drop_unread(qdq)
    return rewired


def _drop_unread(model: onnx.ModelProto) -> None:
    """Remove quantize/dequantize nodes whose outputs nothing reads, and the initializers left unused."""
    outputs = {o.name for o in model.graph.output}
    while True:
        read = {tensor for node in model.graph.node for tensor in node.input} | outputs
        dead = [n for n in model.graph.node
                if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not set(n.output) & read]  # fmt: skip
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    read = {tensor for node in model.graph.node for tensor in node.input}
    unused = [init for init in model.graph.initializer if init.name not in read]
    for init in unused:
        model.graph.initializer.remove(init)


def _session(model: onnx.ModelProto | Path):
    import onnxruntime as ort

    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _float_inputs(qdq: onnx.ModelProto, float_weights: dict[str, onnx.TensorProto]) -> dict[str, list[str]]:
    """For every node that reads a dequantized tensor: its inputs with the quantize/dequantize pairs
    bypassed (float activations, and the original weights added to `qdq` once under a new name).
    That includes float consumers of a quantized node's output, such as the GroupNorm after a conv."""
    producers = {out: node for node in qdq.graph.node for out in node.output}
    added: set[str] = set()
    bypassed = {}
    for node in qdq.graph.node:
        inputs = list(node.input)
        for index, tensor in enumerate(inputs):
            dequantize = producers.get(tensor)
            if dequantize is None or dequantize.op_type != "DequantizeLinear":
                continue
            source = producers.get(dequantize.input[0])
            original = dequantize.input[0].removesuffix("_quantized")
            if source is not None and source.op_type == "QuantizeLinear":
                inputs[index] = source.input[0]
            elif original in float_weights:
                renamed = original + "_fp32"  # the original name may still be taken in the QDQ graph
                if renamed not in added:
                    weight = onnx.TensorProto()
                    weight.CopyFrom(float_weights[original])
                    weight.name = renamed
                    qdq.graph.initializer.append(weight)
                    added.add(renamed)
                inputs[index] = renamed
        if inputs != list(node.input):
            bypassed[node.name] = inputs
    return bypassed


def switchable(qdq: onnx.ModelProto, float_weights: dict[str, onnx.TensorProto]) -> dict[str, str]:
    """Rewire `qdq` in place so that one boolean graph input per node chooses whether that node reads
    its quantized inputs (True) or the float ones (False): one session then scores any mix of
    quantized and FP32 nodes. Returns {node name: its switch input}."""
    bypassed = _float_inputs(qdq, float_weights)
    nodes, switches = [], {}
    for node in qdq.graph.node:
        if node.name in bypassed:
            switch = switches[node.name] = f"ser_quantize/{node.name}"
            qdq.graph.input.append(onnx.helper.make_tensor_value_info(switch, onnx.TensorProto.BOOL, []))
            for index, (quantized, original) in enumerate(zip(list(node.input), bypassed[node.name], strict=True)):
                if quantized != original:
                    chosen = f"{switch}/input{index}"
                    nodes.append(onnx.helper.make_node("Where", [switch, quantized, original], [chosen]))
                    node.input[index] = chosen
        nodes.append(node)
    del qdq.graph.node[:]
    qdq.graph.node.extend(nodes)
    return switches


def node_sensitivity(
    float_path: Path,
    quant_path: Path,
    nodes: Sequence[str],
    feeds: Feeds,
    requantize: Callable[[Path, Sequence[str]], None],
) -> dict[str, float]:
    """Each node's own damage: mean squared logit error against the float graph (on the batch `feeds`)
    when that node alone is quantized. Higher is more sensitive.

    Measured at the output, one node at a time, because local error misleads here: a conv's
    quantization noise looks small against its whole output, but the GroupNorm after the first
    conv scales each channel to unit variance and blows up the noise of its quiet channels; and
    removing one node from a fully quantized graph changes little when many share the damage.
    QDQ graphs become one `switchable` session (quantization simulated in float there, which is enough
    to rank; a small floor common to all nodes remains where a pair cannot be bypassed), so ranking the 83
    nodes of a base model costs 83 runs, not 83 sessions; other graphs are re-quantized once per node
    with `requantize(out, exclude)`.
    """
    reference = _session(float_path).run(["logits"], feeds)[0]

    def error(logits: np.ndarray) -> float:
        return float(np.mean((logits - reference) ** 2))

    model = onnx.load(str(quant_path))
    if not set(nodes) <= {node.name for node in model.graph.node}:  # not QDQ (dynamic): node names are gone
        scores = {}
        with tempfile.TemporaryDirectory(prefix="ser-sensitivity-") as tmp:
            path = Path(tmp) / "one-node.onnx"
            for name in nodes:
                requantize(path, [other for other in nodes if other != name])
                scores[name] = error(_session(path).run(["logits"], feeds)[0])
        return scores
    float_weights = {init.name: init for init in onnx.load(str(float_path)).graph.initializer}
    switches = switchable(model, float_weights)
    off = {switch: np.array(False) for switch in switches.values()}
    scores = {}
    with tempfile.TemporaryDirectory(prefix="ser-sensitivity-") as tmp:
        path = Path(tmp) / "switchable.onnx"
        save_model(model, path)
        session = _session(path)
        for name in nodes:  # a node whose inputs could not be bypassed has no switch: it scores the floor
            chosen = {**off, switches[name]: np.array(True)} if name in switches else off
            scores[name] = error(session.run(["logits"], {**feeds, **chosen})[0])
    return scores
