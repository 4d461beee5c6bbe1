"""`ser-export`: a checkpoint → a validated bundle folder."""

from __future__ import annotations

import sys

import click

from ser.models.registry import REGISTRY, SIZES  # data: no torch for `--help`


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model",
    "model",
    type=click.Choice(tuple(REGISTRY)),
    default=None,
    help="Model family. Default: what the checkpoint's config.json says (which also decides the head class); "
    "given with a checkpoint, it must agree. Needed with --random-init and for the default runs/<model>.",
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
    "--optimize/--no-optimize",
    default=None,
    help="Fused attention (MultiHeadAttention), LayerNorm/GELU/bias fusions and constant folding. Default: on, "
    "off with --trt (TensorRT's parser does not take ONNX Runtime's fused operators).",
)
@click.option("--fp16", is_flag=True, help="FP16 weights and activations (for GPUs); reductions and norms stay FP32.")
@click.option(
    "--int8",
    type=click.Choice(["dynamic", "static"]),
    default=None,
    help="INT8: dynamic (MatMul weights; no calibration) or static (QDQ, MatMul and Conv, calibrated on "
    "--calibration-data). Gated on --eval-data.",
)
@click.option(
    "--int8-target",
    type=click.Choice(["portable", "vnni"]),
    default="portable",
    show_default=True,
    help="portable: 7-bit weights, computed exactly on every x86-64 CPU, so the gate's verdict holds wherever the "
    "bundle runs; vnni: full 8-bit weights, exact only on CPUs with AVX-512 VNNI / AVX-VNNI / AMX (the manifest "
    "records the CPU, and loading elsewhere warns).",
)
@click.option("--calibration-data", type=click.Path(exists=True, file_okay=False), default=None, metavar="DIR")
@click.option(
    "--calibration-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True
)
@click.option("--calibration-clips", type=click.IntRange(min=1), default=300, show_default=True)
@click.option(
    "--eval-data",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    metavar="DIR",
    help="Audio for the INT8 accuracy gate (emotion subfolders also give macro-F1). Default: --calibration-data.",
)
@click.option(
    "--eval-clips",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="INT8 gate: clips to judge on, none of them a calibration clip (the default gate needs at least 299).",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0, 1),
    default=0.99,
    show_default=True,
    help="INT8 gate: least top-1 agreement with FP32 PyTorch that the evaluation clips must show.",
)
@click.option(
    "--gate-confidence",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.95,
    show_default=True,
    help="INT8 gate: judge the one-sided Clopper-Pearson lower bound on the agreement at this confidence "
    "(100 % of 70 clips shows only 95.8 %); 0: judge the point agreement on these clips only.",
)
@click.option(
    "--max-f1-drop",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="INT8 gate: most macro-F1 points below PyTorch's (labelled evaluation folders).",
)
@click.option(
    "--min-ccc",
    type=click.FloatRange(-1, 1),
    default=0.99,
    show_default=True,
    help="INT8 gate, dimensional models: least CCC with FP32 PyTorch per dimension that the evaluation clips must "
    "show (its bootstrap lower bound at --gate-confidence).",
)
@click.option(
    "--max-abs-error",
    type=click.FloatRange(min=0, min_open=True),
    default=0.05,
    show_default=True,
    help="INT8 gate, dimensional models: the most any clip's value may differ from FP32 PyTorch's.",
)
@click.option(
    "--embedding",
    is_flag=True,
    help="Also output the pooled embedding the head reads (e.g. 1024 values for audeering's model), for users who "
    "cluster or search recordings; the answers are unchanged.",
)
@click.option(
    "--max-fp32-fraction",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="INT8 gate: share of quantizable nodes that may fall back to FP32 before the export gives up.",
)
@click.option(
    "--triton",
    type=click.Path(),
    default=None,
    metavar="REPOSITORY",
    help="Also write a Triton Inference Server model repository entry for the bundle (REPOSITORY/<model>/).",
)
@click.option(
    "--triton-backend",
    type=click.Choice(["onnxruntime", "python"]),
    default="onnxruntime",
    show_default=True,
    help="onnxruntime: Triton runs the graph (CPU or --triton-gpu), requests of equal length batch together; "
    "python: ser's runtime in Triton's Python backend, encoded files or samples of any length.",
)
@click.option("--triton-max-batch", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--triton-gpu", is_flag=True, help="GPU instances (ONNX Runtime CUDA) instead of CPU.")
@click.option("--triton-tensorrt", is_flag=True, help="With --triton-gpu: ONNX Runtime's TensorRT accelerator, FP16.")
@click.option(
    "--trt",
    is_flag=True,
    help="Also compile the bundle's graph into a TensorRT engine for this machine's GPU (plan file in the bundle; "
    "needs tensorrt and cuda-python). With --int8 static the QDQ graph is symmetric INT8.",
)
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True, help="With --trt.")
@click.option("--min-seconds", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="With --trt: shortest clip the engine takes.")  # fmt: skip
@click.option("--opt-seconds", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="With --trt: the clip length the engine is tuned for.")  # fmt: skip
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="With --trt: longest clip the engine takes (longer audio: use windows).")  # fmt: skip
@click.option("--timing-cache", type=click.Path(dir_okay=False), default=None,
              help="With --trt: TensorRT timing cache file, read before and updated after the build.")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="Print only the bundle path.")
def export_command(
    model: str | None,
    checkpoint: str | None,
    size: str | None,
    random_init: bool,
    out: str | None,
    overwrite: bool,
    opset: int,
    tolerance: float | None,
    optimize: bool | None,
    fp16: bool,
    int8: str | None,
    int8_target: str,
    calibration_data: str | None,
    calibration_method: str,
    calibration_clips: int,
    eval_data: str | None,
    eval_clips: int,
    min_agreement: float,
    gate_confidence: float,
    max_f1_drop: float,
    min_ccc: float,
    max_abs_error: float,
    embedding: bool,
    max_fp32_fraction: float,
    triton: str | None,
    triton_backend: str,
    triton_max_batch: int,
    triton_gpu: bool,
    triton_tensorrt: bool,
    trt: bool,
    max_batch: int,
    min_seconds: float,
    opt_seconds: float,
    max_seconds: float,
    timing_cache: str | None,
    quiet: bool,
) -> None:
    """Export a speech-emotion model to a bundle folder: ONNX graph (audio, lengths → logits) plus a
    manifest, optimised, optionally FP16 or INT8, and validated against PyTorch with ONNX Runtime.
    Fails, writing nothing, above the tolerance or below the INT8 accuracy gate."""
    from ser.cli import setup_logging, stop_on_sigterm
    from ser.data.corpus import DataError
    from ser.export import ExportGateError, ExportOptions, ExportToleranceError, Gate, Int8Options, export_bundle
    from ser.export.exporter import TensorRTOptions
    from ser.export.tensorrt import TensorRTError
    from ser.export.triton import TritonOptions, write_triton_repository
    from ser.models import CheckpointError
    from ser.models.checkpoint import detect

    setup_logging(verbose=not quiet)
    stop_on_sigterm()
    try:
        if model is None and checkpoint is None:
            raise CheckpointError("give --checkpoint PATH|HUB_ID (its config.json names the model), or --model")
        if out is None:
            out = f"bundles/{model or detect(checkpoint).spec.name}"
        options = ExportOptions(
            model=model,
            checkpoint=checkpoint,
            size=size,
            random_init=random_init,
            opset=opset,
            tolerance=tolerance,
            optimize=not trt if optimize is None else optimize,
            fp16=fp16,
            int8=Int8Options(mode=int8, method=calibration_method, symmetric=trt, target=int8_target) if int8 else None,
            calibration_data=calibration_data,
            eval_data=eval_data,
            calibration_clips=calibration_clips,
            eval_clips=eval_clips,
            gate=Gate(
                min_agreement=min_agreement,
                max_f1_drop=max_f1_drop,
                min_ccc=min_ccc,
                max_abs_error=max_abs_error,
                max_fp32_fraction=max_fp32_fraction,
                confidence=gate_confidence or None,
            ),
            embedding=embedding,
            trt=TensorRTOptions(
                max_batch=max_batch,
                min_seconds=min_seconds,
                opt_seconds=opt_seconds,
                max_seconds=max_seconds,
                timing_cache=timing_cache,
            )
            if trt
            else None,
        )
        triton_options = TritonOptions(
            backend=triton_backend, max_batch=triton_max_batch, gpu=triton_gpu, tensorrt=triton_tensorrt
        )
        bundle = export_bundle(options, out, overwrite=overwrite, show_progress=not quiet)
        if triton:
            model_dir = write_triton_repository(bundle, triton, triton_options, overwrite=overwrite)
    except (
        CheckpointError, ExportToleranceError, ExportGateError, DataError, TensorRTError, ValueError, FileExistsError,
    ) as e:  # fmt: skip
        click.echo(f"ser-export: error: {e}", err=True)
        sys.exit(1)
    click.echo(str(bundle.path))
    if triton:
        click.echo(str(model_dir))
