"""Checkpoint → validated bundle folder, the whole export in one call."""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
import transformers

import ser
from ser.audio import SAMPLE_RATE
from ser.bundle import ONNX_NAME, Bundle, BundleWriter, Manifest, ModelInfo, graph_signature
from ser.export.onnx import OPSET, export_onnx
from ser.export.validate import ExportToleranceError, validate
from ser.models import load_model
from ser.runtime.onnxrt import OnnxRuntimeBackend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    model: str  # registry name
    checkpoint: str | None = None  # folder or hub id; None: runs/<model>
    size: str | None = None  # with random_init
    random_init: bool = False
    opset: int = OPSET
    tolerance: float | None = None  # max |logit error|; None: the model spec's FP32 tolerance


def export_bundle(options: ExportOptions, out: str | Path, overwrite: bool = False) -> Bundle:
    """Load, export to ONNX, validate with ONNX Runtime, and write the bundle folder at `out`.

    Raises ExportToleranceError (and writes nothing) when the graph drifts past the tolerance.
    """
    loaded = load_model(options.model, options.checkpoint, options.size, options.random_init)
    tolerance = options.tolerance if options.tolerance is not None else loaded.spec.fp32_tolerance
    module = loaded.waveform()
    inputs, outputs = graph_signature(len(loaded.labels))
    with BundleWriter(out, overwrite=overwrite) as writer:
        assert writer.dir is not None
        onnx_path = writer.dir / ONNX_NAME
        log.info("exporting %s (%s) to ONNX opset %d", options.model, loaded.size, options.opset)
        export_onnx(module, onnx_path, options.opset)
        log.info("validating against PyTorch with ONNX Runtime")
        with OnnxRuntimeBackend(onnx_path, inputs, device="cpu") as backend:
            report = validate(backend, module, tolerance)
        if not report.passed:
            raise ExportToleranceError(
                f"{options.model}: ONNX logits differ from PyTorch by {report.max_abs_logit_error:.3g} "
                f"(tolerance {tolerance:g}, top-1 agreement {report.top1_agreement:.1%}); no bundle written"
            )
        manifest = Manifest(
            model=ModelInfo(
                name=options.model,
                size=loaded.size,
                architecture=type(loaded.model).__name__,
                parameters=sum(p.numel() for p in loaded.model.parameters()),
            ),
            labels=loaded.labels,
            sample_rate=SAMPLE_RATE,
            precision="fp32",
            inputs=inputs,
            outputs=outputs,
            source={**loaded.source, "normalize": loaded.normalize},
            versions={
                "ser": ser.__version__,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
                "numpy": np.__version__,
                "opset": str(options.opset),
            },
            validation=report.to_dict(),
        )
        bundle = writer.commit(manifest)
    log.info(
        "wrote %s: max |logit error| %.2e, top-1 agreement %.0f%%",
        bundle.path,
        report.max_abs_logit_error,
        100 * report.top1_agreement,
    )
    return bundle
