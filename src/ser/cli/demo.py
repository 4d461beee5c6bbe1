"""`ser demo` (`make demo`): the whole pipeline on a built-in default, on a CPU in a few minutes.

Speak a corpus with espeak-ng, train tiny versions of all four models on it from scratch, export each
to a validated bundle, and answer held-out clips with the torch-free runtime. Tiny models on 350
synthetic clips learn the prosody profiles only in part: the point is the pipeline, and the figures
it prints are what such models reach. It sits with the CLI, above every stage it runs; the stages are
imported when it runs, so `ser --help` stays light.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ser.metrics import ClassificationMetrics

log = logging.getLogger(__name__)

CLIPS_PER_CLASS = 50
# From scratch, tiny transformers need a high peak rate to get going within a dozen epochs.
DEMO_TRAINING = {
    "wav2vec2": dict(epochs=10, learning_rate=3e-3),
    "hubert": dict(epochs=10, learning_rate=3e-3),
    "wavlm": dict(epochs=10, learning_rate=3e-3),
    "resnet18": dict(epochs=8, learning_rate=1e-3),
}


@dataclass(frozen=True)
class DemoResult:
    model: str
    train_seconds: float
    best_epoch: int
    test: ClassificationMetrics  # PyTorch, best checkpoint, test split
    bundle: Path
    bundle_test: ClassificationMetrics  # the exported bundle through EmotionRecognizer, same clips
    export_max_error: float


# The product's four models; the other registered families export and train the same way.
DEMO_MODELS = ("wav2vec2", "hubert", "wavlm", "resnet18")


def run_demo(out: Path, models: tuple[str, ...] = DEMO_MODELS, show_progress: bool = True) -> list[DemoResult]:
    """Speak the corpus (once), then train, export and score each of `models` into `out`."""
    from ser.data.corpus import Split
    from ser.data.synth import synthesize_corpus
    from ser.export import ExportOptions, export_bundle
    from ser.metrics import classification_metrics
    from ser.runtime import EmotionRecognizer
    from ser.training.augment import AugmentOptions
    from ser.training.loop import TrainOptions, train

    corpus = out / "corpus"
    if not corpus.exists():
        log.info("speaking %d clips per emotion into %s", CLIPS_PER_CLASS, corpus)
        synthesize_corpus(corpus, CLIPS_PER_CLASS, seed=0)
    results = []
    for name in models:
        log.info("training %s (tiny, from scratch)", name)
        started = time.perf_counter()
        trained = train(
            TrainOptions(
                model=name,
                data=corpus,
                out=out / "runs" / name,
                size="tiny",
                batch_size=8,
                dropout=0.0,
                patience=4,
                augment=AugmentOptions(
                    pitch_semitones=0.5
                ),  # larger shifts would move one emotion's pitch onto another's
                **DEMO_TRAINING[name],
            ),
            show_progress=show_progress,
            overwrite=True,
        )
        seconds = time.perf_counter() - started
        bundle = export_bundle(ExportOptions(name, checkpoint=str(trained.out)), out / "bundles" / name, overwrite=True)
        test = Split.load(trained.out / "split.json", corpus).test
        with EmotionRecognizer.load(bundle.path) as recognizer:
            predictions = recognizer.predict_batch([clip.path for clip in test])
        labels = bundle.manifest.labels
        bundle_test = classification_metrics(
            [labels.index(c.label) for c in test], [labels.index(p.label) for p in predictions], labels
        )
        results.append(
            DemoResult(
                name,
                seconds,
                trained.best_epoch,
                trained.held_out[1],
                bundle.path,
                bundle_test,
                bundle.manifest.validation["max_abs_logit_error"],
            )
        )
    return results


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("demo"),
    show_default=True,
    help="Folder for the corpus, runs and bundles.",
)
def demo_command(out: Path) -> None:
    """Speak a corpus, train the four models at tiny size on it, export them, and score the bundles."""
    from rich.console import Console
    from rich.table import Table

    from ser.cli import setup_logging, stop_on_sigterm
    from ser.labels import LABELS

    setup_logging()
    stop_on_sigterm()
    results = run_demo(out)
    table = Table(title=f"Tiny models trained from scratch on {CLIPS_PER_CLASS * len(LABELS)} espeak-ng clips")
    for column in ("model", "train s", "best epoch", "test acc", "test macro-F1", "bundle acc", "export |Δlogit|"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in results:
        table.add_row(
            r.model,
            f"{r.train_seconds:.0f}",
            str(r.best_epoch),
            f"{r.test.accuracy:.3f}",
            f"{r.test.macro_f1:.3f}",
            f"{r.bundle_test.accuracy:.3f}",
            f"{r.export_max_error:.1e}",
        )
    Console().print(table)
    click.echo(f"Chance is {1 / len(LABELS):.3f}. 'test' is PyTorch on the held-out split; 'bundle' the exported ONNX.")
    infer = Path(sys.executable).parent / "ser-infer"
    click.echo(f"Runs in {out / 'runs'}, bundles in {out / 'bundles'}; try:")
    click.echo(f"  {infer} {out / 'bundles' / 'wavlm'} {out / 'corpus' / 'Sad'}/sad_0000.wav")
