"""`ser-infer`: answer the emotion in audio files with a bundle."""

from __future__ import annotations

import json
import sys

import click

from ser.audio import AudioError
from ser.bundle import BundleError
from ser.runtime.base import BackendError
from ser.runtime.recognizer import BACKENDS, EmotionRecognizer, Prediction


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path())
@click.argument("files", nargs=-1, required=True, type=click.Path(readable=False))  # each checked alone
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per file: label, canonical and scores (or dimensions, for a dimensional bundle), "
    "duration_s; or error.",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="auto: the bundle's TensorRT plan where it runs, else ONNX Runtime on CUDA where its CUDA provider loads "
    "and a GPU is there, else the CPU engine ser-tune recorded as fastest on this kind of CPU (ONNX Runtime where "
    "it has not run). onnxruntime-cpu|-cuda|-tensorrt: ONNX Runtime on that provider (TensorRT's engines cached "
    "beside the graph); openvino-cpu: the bundle's graph on OpenVINO; tensorrt: the bundle's plan (ser-export "
    "--trt). A named backend runs as named or fails saying why.",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Clips per inference call."
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Longer files are refused (from their header, before decoding) with an error line of their own: the "
    "model's memory grows with the square of a clip's length. Use ser-serve's /v1/timeline for long recordings.",
)
@click.option(
    "--strict-cpu",
    is_flag=True,
    help="Refuse (exit 2) an INT8 bundle whose answers can differ here from what its accuracy gate checked (a "
    "'vnni' target on a CPU without VNNI, or an engine the gate did not judge); without it, a warning says so.",
)
def infer_command(
    bundle: str,
    files: tuple[str, ...],
    as_json: bool,
    backend: str,
    threads: int | None,
    batch_size: int,
    max_seconds: float,
    strict_cpu: bool,
) -> None:
    """Classify the emotion in each FILE (wav, flac, ogg, mp3) with the BUNDLE folder.

    Each file gets its own answer or error line, in order, as soon as its batch is done; a file that
    cannot be read, is too long, or fails in any other way does not stop the others. The exit status
    is 1 if any failed (2 if the bundle itself is unusable).
    """
    from ser.cli import setup_logging

    setup_logging(verbose=False)  # warnings (an INT8 bundle from another kind of CPU) on stderr
    try:
        recognizer = EmotionRecognizer.load(bundle, backend=backend, threads=threads, strict_cpu=strict_cpu)
    except (BundleError, BackendError) as e:
        click.echo(f"ser-infer: error: {e}", err=True)
        sys.exit(2)
    failed = False
    # A batch at a time, so memory holds at most batch_size decoded files whatever the number of files.
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        try:
            results = recognizer.predict_each(list(chunk), batch_size=batch_size, max_seconds=max_seconds)
        except Exception:  # the batch as a whole failed (out of memory, a backend error): one by one
            results = [_alone(recognizer, file, max_seconds) for file in chunk]
        for file, result in zip(chunk, results, strict=True):
            failed |= not isinstance(result, Prediction)
            click.echo(_format(file, result, as_json), err=not as_json and not isinstance(result, Prediction))
    sys.exit(1 if failed else 0)


def _alone(recognizer: EmotionRecognizer, file: str, max_seconds: float) -> Prediction | Exception:
    try:
        return recognizer.predict_each([file], max_seconds=max_seconds)[0]
    except Exception as e:
        return e if isinstance(e, AudioError) else RuntimeError(f"{file}: {type(e).__name__}: {e}")


def _format(file: str, result: Prediction | Exception, as_json: bool) -> str:
    if not isinstance(result, Prediction):
        return json.dumps({"file": file, "error": str(result)}) if as_json else f"error: {result}"
    if as_json:  # allow_nan=False: never bare NaN, which is not JSON (answers are checked finite anyway)
        return json.dumps({"file": file, **result.to_dict()}, allow_nan=False)
    return f"{file}\t{result.describe()}"
