"""`ser-eval`: score any checkpoint on any labelled folder."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="Emotion-folder tree or path,label CSV; for a dimensional model a CSV of path and its dimensions "
    "(path,arousal,dominance,valence).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for metrics.json (and confusion.png for labels).",
)
@click.option(
    "--split",
    type=click.Choice(["all", "test"]),
    default="all",
    show_default=True,
    help="all clips in --data, or the test split saved in RUN_DIR's split.json.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--device", default="auto", show_default=True)
def eval_command(run_dir: Path, data: Path, out: Path, split: str, batch_size: int, device: str) -> None:
    """Accuracy, per-class precision/recall/F1, macro and weighted F1 and the confusion matrix of the
    checkpoint in RUN_DIR on --data; for a dimensional model (arousal, dominance, valence) CCC, Pearson's r and
    MAE per dimension."""
    from ser.cli import setup_logging, stop_on_sigterm
    from ser.data.corpus import Corpus, DataError, Split, drop_unreadable, read_ratings
    from ser.models import CheckpointError, load_model
    from ser.staging import write_atomic
    from ser.training.loop import TrainError, evaluate, evaluate_dimensions, resolve_device, write_metrics

    setup_logging()
    stop_on_sigterm()
    try:
        loaded = load_model(checkpoint=run_dir)  # the checkpoint's config.json decides the class
        if not loaded.answer.is_categorical:
            if split != "all":
                raise DataError("a dimensional model is scored on every row of its CSV: use --split all")
            rated = read_ratings(data, loaded.labels)
            scores, skipped = evaluate_dimensions(loaded, rated, resolve_device(device), batch_size)
            for reason in skipped:
                click.echo(f"skipped {reason}", err=True)
            out.mkdir(parents=True, exist_ok=True)
            write_atomic(out / "metrics.json", scores.to_json())
            click.echo(f"{out / 'metrics.json'}: {scores.clips} clips; {scores.summary()}")
            return
        corpus = Corpus.from_path(data)
        if split == "test":
            if not (run_dir / "split.json").is_file():
                raise DataError(f"{run_dir}: no split.json (not a ser-train run); use --split all")
            clips = Split.load(run_dir / "split.json", corpus.root).test
        else:
            clips = drop_unreadable(corpus).clips
        metrics = evaluate(loaded, clips, resolve_device(device), batch_size)
    except (CheckpointError, DataError, TrainError) as e:
        click.echo(f"ser-eval: error: {e}", err=True)
        sys.exit(1)
    write_metrics(metrics, out, f"{loaded.spec.name} on {data} ({split}, {len(clips)} clips)")
    click.echo(f"{out / 'metrics.json'}: {len(clips)} clips; {metrics.summary()}")
