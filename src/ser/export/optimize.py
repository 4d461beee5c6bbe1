"""Graph optimisation and FP16 conversion of an exported graph: model path in, model path out.

The attention layers arrive already fused (ser.export.onnx writes MultiHeadAttention). Here ONNX
Runtime's transformer optimizer adds the LayerNorm, residual (SkipLayerNormalization), GELU and
bias fusions, on top of its basic level (constant folding, redundant-node removal, Conv+BatchNorm
folding). Only hardware-independent passes are saved, so the optimised file loads in any ONNX
Runtime build (CPU or CUDA); the session adds its machine-specific passes at load time.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model

from ser.export.onnx import EXTERNAL_DATA_BYTES

log = logging.getLogger(__name__)

# ONNX Runtime contrib operators that only appear through fusion; a test counts them.
FUSED_OPS = (
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "BiasGelu",
    "Gelu",
    "FastGelu",
    "BiasAdd",
    "BiasSkipLayerNormalization",
)

# Kept in FP32 by --fp16. What measurably overflowed (benchmarks/fp16_keep_list.py) is the length
# arithmetic, kept by `length_nodes`; these op types are a precaution for trained activations that
# the random-weight measurement cannot show: sums over a whole clip (waveform normalisation, the
# masked GroupNorm's statistics, pooling) can exceed FP16's 65504, and norm statistics, Softmax over
# frames and the log of the mel power lose precision in FP16.
FP16_KEEP_FP32_OPS = (
    "ReduceSum",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Log",
    "LayerNormalization",
    "SkipLayerNormalization",
    "Softmax",
)


@dataclass(frozen=True)
class OptimizationReport:
    nodes_before: int
    nodes_after: int
    fused: dict[str, int]  # fused operator → count in the saved graph

    def to_dict(self) -> dict:
        return {"nodes_before": self.nodes_before, "nodes_after": self.nodes_after, "fused": self.fused}


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node)


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Save with weights beside the graph only when protobuf's 2 GiB limit requires it."""
    external = model.ByteSize() > EXTERNAL_DATA_BYTES
    onnx.save_model(
        model, str(path), save_as_external_data=external, location=f"{path.name}.data" if external else None
    )


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name: quantization excludes nodes by name, and the manifest lists them."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


def optimize_graph(src: Path, dst: Path) -> OptimizationReport:
    """Fuse and fold `src` into `dst` (which may be the same path)."""
    before = len(onnx.load(str(src), load_external_data=False).graph.node)
    options = FusionOptions("bert")
    # The optimizer prints and logs its symbolic shape inference failures (it then fuses without
    # shapes; on these graphs only SkipLayerNormalization needs them, and sessions fuse that at load).
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            optimized = optimize_model(
                str(src), model_type="bert", num_heads=0, hidden_size=0, optimization_options=options, opt_level=1
            )
    finally:
        logging.disable(logging.NOTSET)
    model = optimized.model
    name_nodes(model)
    _type_fused_outputs(model)
    counts = op_counts(model)
    fused = {op: counts[op] for op in FUSED_OPS if counts[op]}
    save_model(model, dst)
    log.info("optimised graph: %d → %d nodes, fused %s", before, len(model.graph.node), fused or "nothing")
    return OptimizationReport(before, len(model.graph.node), fused)


def _type_fused_outputs(model: onnx.ModelProto) -> None:
    """Record the element type of what ONNX Runtime's fused operators produce: their first input's.

    The optimizer leaves them untyped (its symbolic shape inference fails on these graphs), and the FP16
    converter casts a blocked node's input back to FP32 only when the input is typed: an untyped GELU
    output in front of a LayerNorm (HuBERT-large's layer-normed feature encoder) reached it as FP16.
    """
    types = {info.name: info.type.tensor_type.elem_type for info in (*model.graph.input, *model.graph.value_info)}
    types.update({initializer.name: initializer.data_type for initializer in model.graph.initializer})
    for node in model.graph.node:  # topological: a fused node's input is typed by the time it is reached
        if node.domain != "com.microsoft" or node.input[0] not in types:
            continue
        for output in node.output:  # in the FP32 graph every output of these is FP32, like the first input
            if output and output not in types:
                model.graph.value_info.append(onnx.helper.make_tensor_value_info(output, types[node.input[0]], None))
                types[output] = types[node.input[0]]


def length_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes that compute only from `lengths`, tensor shapes and constants: sample and frame counts.

    FP16 tops out at 65504, about 4.1 s of 16 kHz samples, so these must stay FP32 or every clip
    longer than that gets infinite lengths (measured: NaN logits on a 30 s clip).
    """
    constants = {init.name for init in model.graph.initializer}
    derived = {"lengths"}
    names = []
    for node in model.graph.node:
        dynamic = [name for name in node.input if name and name not in constants]
        if node.op_type in ("Shape", "Size") or (dynamic and all(name in derived for name in dynamic)):
            derived.update(node.output)
            names.append(node.name)
        elif not dynamic:
            constants.update(node.output)
    return names


def convert_fp16(
    src: Path, dst: Path, keep_fp32_ops: tuple[str, ...] = FP16_KEEP_FP32_OPS, keep_lengths: bool = True
) -> dict:
    """FP16 weights and activations with FP32 inputs/outputs; `keep_fp32_ops` and the length
    arithmetic (see `length_nodes`) stay in FP32.

    Returns what the manifest records: the op types kept and how many nodes stayed FP32.
    """
    model = onnx.load(str(src))
    name_nodes(model)
    lengths = length_nodes(model) if keep_lengths else []
    blocked = {node.name for node in model.graph.node if node.op_type in keep_fp32_ops} | set(lengths)
    _drop_fp32_edge_types(model, blocked)
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=list(keep_fp32_ops),
        node_block_list=lengths,
        disable_shape_infer=True,  # it would re-type the FP32 edges dropped above
    )
    _drop_repeats(converted)
    save_model(converted, dst)
    return {"fp32_op_types": list(keep_fp32_ops), "fp32_length_nodes": len(lengths), "fp32_nodes": len(blocked)}


def _drop_repeats(model: onnx.ModelProto) -> None:
    """Keep one of each identical node and value_info.

    ONNX Runtime's converter before 1.32 (the newest onnxruntime-gpu is 1.31) writes the Cast in front of
    a blocked node once per blocked consumer, all under one name, which no session loads.
    """
    for field in (model.graph.node, model.graph.value_info):
        seen: set[bytes] = set()
        unique = []
        for item in field:
            key = item.SerializeToString()
            if key not in seen:
                seen.add(key)
                unique.append(item)
        del field[:]
        field.extend(unique)


def _drop_fp32_edge_types(model: onnx.ModelProto, blocked: set[str]) -> None:
    """Forget the recorded type of tensors passed from one FP32 node to another.

    The converter turns every typed float tensor into FP16 and casts around blocked nodes, so a
    value between two blocked nodes would round-trip through FP16 (a sample count of 480,000
    becomes inf). Untyped, it is left alone and stays FP32.
    """
    producer = {out: node.name for node in model.graph.node for out in node.output}
    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.name)
    outputs = {o.name for o in model.graph.output}
    keep = [
        info
        for info in model.graph.value_info
        if not (
            producer.get(info.name) in blocked
            and info.name not in outputs
            and consumers.get(info.name, set()) <= blocked
        )
    ]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
