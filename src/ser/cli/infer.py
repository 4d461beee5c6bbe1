"""`ser-infer`: answer the emotion in audio files with a bundle."""

from __future__ import annotations

import json
import sys

import click

from ser.audio import SAMPLE_RATE, AudioError, load_audio
from ser.bundle import BundleError
from ser.runtime.base import BackendError
from ser.runtime.recognizer import BACKENDS, DEVICES, EmotionRecognizer, Prediction


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path())
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file (label, scores, or error).")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="auto: the bundle's TensorRT plan where it runs, else ONNX Runtime on --device; tensorrt: the plan "
    "(ser-export --trt) or an error saying why not.",
)
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="Where ONNX Runtime runs: auto (CUDA where its CUDA provider loads and a GPU is there, else the CPU), "
    "cpu, cuda, or tensorrt (its TensorRT provider, engines cached beside the graph).",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores).")
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Clips per inference call."
)
def infer_command(
    bundle: str, files: tuple[str, ...], as_json: bool, backend: str, device: str, threads: int | None, batch_size: int
) -> None:
    """Classify the emotion in each FILE (wav, flac, ogg, mp3) with the BUNDLE folder.

    A file that cannot be read gets its own error line; the others are still answered, and the exit
    status is 1 if any failed (2 if the bundle itself is unusable).
    """
    try:
        recognizer = EmotionRecognizer.load(bundle, backend=backend, device=device, threads=threads)
    except (BundleError, BackendError) as e:
        click.echo(f"ser-infer: error: {e}", err=True)
        sys.exit(2)
    clips, errors = {}, {}
    for file in files:
        try:
            clips[file] = load_audio(file)
        except AudioError as e:
            errors[file] = str(e)
    answers = dict(zip(clips, recognizer.predict_batch(list(clips.values()), SAMPLE_RATE, batch_size), strict=True))
    for file in files:
        if file in answers:
            click.echo(_format(file, answers[file], as_json))
        elif as_json:
            click.echo(json.dumps({"file": file, "error": errors[file]}))
        else:
            click.echo(f"error: {errors[file]}", err=True)
    sys.exit(1 if errors else 0)


def _format(file: str, p: Prediction, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {"file": file, "label": p.label, "canonical": p.canonical, "scores": p.scores, "duration_s": p.duration_s}
        )
    others = ", ".join(f"{label} {score:.2f}" for label, score in sorted(p.scores.items(), key=lambda kv: -kv[1]))
    return f"{file}\t{p.label}\t({others})"
