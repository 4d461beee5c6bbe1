"""The export stage: PyTorch checkpoint → ONNX graph → validated bundle folder."""

from ser.export.exporter import ExportOptions, FloatGraphs, export_bundle
from ser.export.gate import ExportGateError, Gate
from ser.export.quantize import Int8Options
from ser.export.validate import ExportToleranceError, ValidationReport

__all__ = [
    "ExportGateError",
    "ExportOptions",
    "ExportToleranceError",
    "FloatGraphs",
    "Gate",
    "Int8Options",
    "ValidationReport",
    "export_bundle",
]
