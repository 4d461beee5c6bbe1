"""`ser-export`: a checkpoint → a validated bundle folder."""

from __future__ import annotations

import sys

import click

# The registry's names, listed here so `--help` works without importing torch (a test keeps them equal).
MODEL_NAMES = ("wav2vec2", "hubert", "wavlm", "resnet18")
SIZES = ("tiny", "base", "large")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model",
    "model",
    type=click.Choice(MODEL_NAMES),
    required=True,
    help="Architecture: wav2vec2 (base), hubert (large), wavlm (base, enhanced head), resnet18 (log-mel).",
)
@click.option(
    "--checkpoint",
    default=None,
    metavar="PATH|HUB_ID",
    help="Checkpoint folder (save_pretrained output or config.json + model.pt), or a Hugging Face hub "
    "id. Default: runs/<model>.",
)
@click.option(
    "--size",
    type=click.Choice(SIZES),
    default=None,
    help="With --random-init: tiny (tests, demos), base or large. A checkpoint fixes its own size.",
)
@click.option(
    "--random-init",
    is_flag=True,
    help="Random weights at --size, for latency work; the manifest says so and its answers mean nothing.",
)
@click.option("--out", type=click.Path(), default=None, help="Bundle folder to write. Default: bundles/<model>.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out (atomically).")
@click.option("--opset", type=click.IntRange(min=17), default=18, show_default=True, help="ONNX opset.")
@click.option(
    "--tolerance",
    type=float,
    default=None,
    help="Largest |logit| difference to PyTorch an export may show. Default: the model's (1e-3).",
)
@click.option(
    "--triton",
    type=click.Path(),
    default=None,
    metavar="REPOSITORY",
    help="Also write a Triton Inference Server model repository entry for the bundle (REPOSITORY/<model>/).",
)
@click.option("--triton-max-batch", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--triton-gpu", is_flag=True, help="GPU instances (ONNX Runtime CUDA) instead of CPU.")
@click.option("--triton-tensorrt", is_flag=True, help="With --triton-gpu: ONNX Runtime's TensorRT accelerator, FP16.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the bundle path.")
def export_command(
    model: str,
    checkpoint: str | None,
    size: str | None,
    random_init: bool,
    out: str | None,
    overwrite: bool,
    opset: int,
    tolerance: float | None,
    triton: str | None,
    triton_max_batch: int,
    triton_gpu: bool,
    triton_tensorrt: bool,
    quiet: bool,
) -> None:
    """Export a speech-emotion model to a bundle folder: ONNX graph (audio, lengths → logits) plus a
    manifest, validated against PyTorch with ONNX Runtime. Fails, writing nothing, above the tolerance."""
    from ser.cli import setup_logging
    from ser.export import ExportOptions, ExportToleranceError, export_bundle
    from ser.export.triton import TritonOptions, write_triton_repository
    from ser.models import CheckpointError

    setup_logging(verbose=not quiet)
    options = ExportOptions(model, checkpoint, size, random_init, opset, tolerance)
    try:
        triton_options = TritonOptions(max_batch=triton_max_batch, gpu=triton_gpu, tensorrt=triton_tensorrt)
        bundle = export_bundle(options, out or f"bundles/{model}", overwrite=overwrite)
        if triton:
            model_dir = write_triton_repository(bundle, triton, triton_options, overwrite=overwrite)
    except (CheckpointError, ExportToleranceError, ValueError, FileExistsError) as e:
        click.echo(f"ser-export: error: {e}", err=True)
        sys.exit(1)
    click.echo(str(bundle.path))
    if triton:
        click.echo(str(model_dir))
