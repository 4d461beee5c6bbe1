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

# Kept in FP32 by --fp16, measured on wav2vec2/WavLM/ResNet18 graphs (benchmarks/RESULTS.md):
# reductions over the whole clip (waveform normalisation, the masked GroupNorm's statistics,
# pooling) overflow FP16's 65504 on long clips; LayerNorm statistics and the log of the mel
# power lose accuracy; Softmax over frames in pooling underflows.
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
    # The optimizer prints its symbolic shape inference failures (it then fuses without shapes; on
    # these graphs only SkipLayerNormalization needs them, and sessions fuse that at load time).
    with contextlib.redirect_stdout(io.StringIO()):
        optimized = optimize_model(
            str(src), model_type="bert", num_heads=0, hidden_size=0, optimization_options=options, opt_level=1
        )
    model = optimized.model
    name_nodes(model)
    counts = op_counts(model)
    fused = {op: counts[op] for op in FUSED_OPS if counts[op]}
    save_model(model, dst)
    log.info("optimised graph: %d → %d nodes, fused %s", before, len(model.graph.node), fused or "nothing")
    return OptimizationReport(before, len(model.graph.node), fused)


def convert_fp16(src: Path, dst: Path, keep_fp32_ops: tuple[str, ...] = FP16_KEEP_FP32_OPS) -> dict:
    """FP16 weights and activations with FP32 inputs/outputs, `keep_fp32_ops` left in FP32.

    Returns what the manifest records: the op types kept and how many nodes that is.
    """
    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(keep_fp32_ops))
    name_nodes(converted)
    save_model(converted, dst)
    kept = sum(1 for node in model.graph.node if node.op_type in keep_fp32_ops)
    return {"fp32_op_types": list(keep_fp32_ops), "fp32_nodes": kept}
