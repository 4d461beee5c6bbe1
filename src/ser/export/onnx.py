"""torch → ONNX: the waveform-in graph with dynamic batch and length.

Uses the dynamo exporter (torch.export): on these models the legacy TorchScript tracer bakes
shape-dependent values into the graph and drifts by ~1e-2 on other lengths.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn
from torch.nn.utils import parametrize

from ser.audio import MIN_SAMPLES

OPSET = 18
EXTERNAL_DATA_BYTES = 1 << 30  # above 1 GiB of weights, store them beside the graph (protobuf caps at 2 GiB)


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


def export_onnx(module: nn.Module, path: Path, opset: int = OPSET) -> None:
    """Export `module` (audio, lengths) → logits to `path`, with dynamic batch and sample count."""
    if opset < 17:
        raise ValueError(f"opset {opset} is too old: ser needs 17 or newer (LayerNormalization)")
    module = module.eval()
    remove_weight_norm(module)
    audio = torch.randn(2, 16_000) * 0.1
    lengths = torch.tensor([16_000, 11_999])
    batch = torch.export.Dim("batch", min=1, max=1024)
    samples = torch.export.Dim("samples", min=MIN_SAMPLES, max=16_000 * 3600)
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not actionable here
        program = torch.onnx.export(
            module,
            (audio, lengths),
            dynamo=True,
            opset_version=opset,
            input_names=["audio", "lengths"],
            output_names=["logits"],
            dynamic_shapes={"audio": {0: batch, 1: samples}, "lengths": {0: batch}},
            verbose=False,
        )
    assert program is not None
    program.save(str(path), external_data=weight_bytes > EXTERNAL_DATA_BYTES)
    onnx.checker.check_model(str(path))
