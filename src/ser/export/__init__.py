"""The export stage: PyTorch checkpoint → ONNX graph → validated bundle folder.

The package is also callable: `ser.export(checkpoint, out, ...)` is `export(...)` below, the Python
face of `ser-export`.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

from ser.bundle import Bundle
from ser.export.exporter import ExportOptions, FloatGraphs, export_bundle
from ser.export.gate import ExportGateError, Gate
from ser.export.quantize import Int8Options
from ser.export.validate import ExportToleranceError, ValidationReport


def export(
    checkpoint: str | Path | None,
    out: str | Path,
    *,
    model: str | None = None,
    int8: str | None = None,
    int8_target: str = "portable",
    overwrite: bool = False,
    **options: Any,
) -> Bundle:
    """Export `checkpoint` (a folder or hub id; its config.json names the model) to a bundle at `out`, as
    `ser-export` does: `int8` "dynamic" or "static" (behind the accuracy gate), `fp16=True`, and any other
    `ExportOptions` field by name (`calibration_data`, `eval_data`, `gate`, `trt`, ...)."""
    quantize = Int8Options(mode=int8, target=int8_target) if int8 else None
    checkpoint = None if checkpoint is None else str(checkpoint)
    return export_bundle(ExportOptions(model=model, checkpoint=checkpoint, int8=quantize, **options), out, overwrite)


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Bundle:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "ExportGateError",
    "ExportOptions",
    "ExportToleranceError",
    "FloatGraphs",
    "Gate",
    "Int8Options",
    "ValidationReport",
    "export",
    "export_bundle",
]
