"""torch → ONNX: the waveform-in graph with dynamic batch and length.

Uses the dynamo exporter (torch.export): on these models the legacy TorchScript tracer bakes
shape-dependent values into the graph and drifts by ~1e-2 on other lengths. With
`fuse_attention`, each self-attention layer is written as one `com.microsoft.MultiHeadAttention`
node (see ser.models.attention), which ONNX Runtime runs on CPU and CUDA.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from pathlib import Path

import onnx
import torch
from onnx.defs import OpSchema
from onnxscript.values import Opset
from torch import nn
from torch.nn.utils import parametrize

from ser.audio import MIN_SAMPLES
from ser.models.attention import fused_attention

OPSET = 18
EXTERNAL_DATA_BYTES = 1 << 30  # above 1 GiB of weights, store them beside the graph (protobuf caps at 2 GiB)


MICROSOFT = "com.microsoft"


def _register_multi_head_attention() -> Opset:
    """Declare ONNX Runtime's MultiHeadAttention (its inputs as far as ser uses them) to onnx's schema
    registry, which onnxscript needs before it can write the node. Idempotent."""
    if not onnx.defs.has("MultiHeadAttention", MICROSOFT):
        optional = OpSchema.FormalParameterOption.Optional
        onnx.defs.register_schema(
            OpSchema(
                "MultiHeadAttention",
                MICROSOFT,
                1,
                inputs=[
                    OpSchema.FormalParameter("query", "T"),
                    OpSchema.FormalParameter("key", "T", param_option=optional),
                    OpSchema.FormalParameter("value", "T", param_option=optional),
                    OpSchema.FormalParameter("bias", "T", param_option=optional),
                    OpSchema.FormalParameter("key_padding_mask", "M", param_option=optional),
                    OpSchema.FormalParameter("attention_bias", "T", param_option=optional),
                ],
                outputs=[OpSchema.FormalParameter("output", "T")],
                type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("M", ["tensor(int32)"], "")],
                attributes=[
                    OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "", required=True),
                    OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, "", required=False),
                ],
            )
        )
    return Opset(MICROSOFT, 1)


def _translation_table() -> dict:
    microsoft = _register_multi_head_attention()

    def multi_head_attention_onnx(query, key, value, bias, num_heads: int, scale: float):
        return microsoft.MultiHeadAttention(query, key, value, None, None, bias, num_heads=num_heads, scale=scale)

    return {torch.ops.ser.multi_head_attention.default: multi_head_attention_onnx}


def remove_weight_norm(module: nn.Module) -> int:
    """Bake every parametrization (the positional conv's weight norm) into a plain weight.

    Returns how many were removed. The exported graph then holds one initializer instead of
    recomputing g * v / ||v|| on every call, and quantizers see an ordinary Conv weight.
    """
    removed = 0
    for child in module.modules():
        if parametrize.is_parametrized(child):
            for name in list(child.parametrizations):
                parametrize.remove_parametrizations(child, name, leave_parametrized=True)
                removed += 1
    return removed


def export_onnx(module: nn.Module, path: Path, opset: int = OPSET, fuse_attention: bool = False) -> int:
    """Export `module` (audio, lengths) → logits (and the embedding, for a wrapper made with one) to `path`,
    with dynamic batch and sample count.

    Returns how many attention layers were written as fused MultiHeadAttention nodes.
    """
    if opset < 17:
        raise ValueError(f"opset {opset} is too old: ser needs 17 or newer (LayerNormalization)")
    module = module.eval()
    remove_weight_norm(module)
    audio = torch.randn(2, 16_000) * 0.1
    lengths = torch.tensor([16_000, 11_999])
    batch = torch.export.Dim("batch", min=1, max=1024)
    samples = torch.export.Dim("samples", min=MIN_SAMPLES, max=16_000 * 3600)
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    with (
        torch.no_grad(),
        warnings.catch_warnings(),
        fused_attention(module) if fuse_attention else nullcontext(0) as fused,
    ):
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not actionable here
        program = torch.onnx.export(
            module,
            (audio, lengths),
            dynamo=True,
            opset_version=opset,
            input_names=["audio", "lengths"],
            output_names=["logits", "embedding"] if getattr(module, "embedding", False) else ["logits"],
            dynamic_shapes={"audio": {0: batch, 1: samples}, "lengths": {0: batch}},
            custom_translation_table=_translation_table() if fused else None,
            verbose=False,
        )
    assert program is not None
    program.save(str(path), external_data=weight_bytes > EXTERNAL_DATA_BYTES)
    _drop_weight_types(path)
    onnx.checker.check_model(str(path))
    return fused


def _drop_weight_types(path: Path) -> None:
    """Remove the exporter's value_info entries for weights: the initializers carry their own type, and
    ONNX Runtime's dynamic quantizer before 1.32 transposes Gemm weights without updating such an
    entry, then fails its own shape inference."""
    model = onnx.load(str(path), load_external_data=False)  # external weights stay where they are
    weights = {initializer.name for initializer in model.graph.initializer}
    kept = [info for info in model.graph.value_info if info.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    onnx.save_model(model, str(path))
