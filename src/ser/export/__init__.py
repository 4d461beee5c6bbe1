"""The export stage: PyTorch checkpoint → ONNX graph → validated bundle folder."""

from ser.export.exporter import ExportOptions, export_bundle
from ser.export.validate import ExportToleranceError, ValidationReport

__all__ = ["ExportOptions", "ExportToleranceError", "ValidationReport", "export_bundle"]
