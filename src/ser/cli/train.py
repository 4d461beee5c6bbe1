"""`ser-train`: fine-tune one of the model families on a labelled folder into a run folder."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ser.models.registry import REGISTRY, SIZES


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model",
    type=click.Choice(tuple(REGISTRY)),
    default=None,
    help="Model family to train. With --checkpoint: inferred from it (given, it must agree); a checkpoint with a "
    "classification head keeps its class, a headless encoder gets the family's head.",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="Emotion-folder tree (Angry/, Happy/, ...) or a path,label CSV.",
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run folder. Default: runs/<model>.")
@click.option(
    "--checkpoint",
    default=None,
    metavar="PATH|HUB_ID",
    help="Pretrained start: folder or hub id (e.g. facebook/wav2vec2-base). Without it: from scratch at --size.",
)
@click.option("--size", type=click.Choice(SIZES), default=None, help="From scratch only. Default: the model's.")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--lr", type=float, default=None, help="Peak learning rate. Default: 5e-5 fine-tuning, 1e-3 scratch.")
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@click.option("--warmup", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="Share of steps.")
@click.option("--dropout", type=click.FloatRange(0, 1), default=None, help="Set every dropout rate of the model.")
@click.option("--freeze-encoder", is_flag=True, help="Keep the pretrained convolutional feature encoder fixed.")
@click.option("--no-class-weights", is_flag=True, help="Plain loss instead of inverse-frequency class weights.")
@click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True, help="Early stopping.")
@click.option("--max-seconds", type=click.FloatRange(min=0.1), default=6.0, show_default=True, help="Crop.")
@click.option("--no-augment", is_flag=True, help="Train without pitch shift, noise, gain and time shift.")
@click.option("--noise-snr", nargs=2, type=float, default=(15.0, 40.0), show_default=True, help="dB range.")
@click.option("--pitch-semitones", type=float, default=2.0, show_default=True, help="± pitch shift range.")
@click.option("--seed", type=int, default=0, show_default=True, help="Split, initialisation and shuffling.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Data-loading processes.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last finished epoch.")
@click.option("--overwrite", is_flag=True, help="Start over, replacing the run in --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def train_command(
    model: str,
    data: Path,
    out: Path | None,
    checkpoint: str | None,
    size: str | None,
    epochs: int,
    batch_size: int,
    lr: float | None,
    weight_decay: float,
    warmup: float,
    dropout: float | None,
    freeze_encoder: bool,
    no_class_weights: bool,
    patience: int,
    max_seconds: float,
    no_augment: bool,
    noise_snr: tuple[float, float],
    pitch_semitones: float,
    seed: int,
    device: str,
    workers: int | None,
    resume: bool,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Fine-tune MODEL on DATA. The best epoch (validation macro-F1) is saved in the run folder as a
    checkpoint that ser-export reads; test-split metrics go to metrics.json and confusion.png."""
    from ser.cli import setup_logging, stop_on_sigterm
    from ser.data.corpus import DataError
    from ser.models import CheckpointError
    from ser.models.checkpoint import detect
    from ser.training.augment import AugmentOptions
    from ser.training.loop import TrainError, TrainOptions, train

    setup_logging(verbose=not quiet)
    stop_on_sigterm()
    if model is None:
        if checkpoint is None:
            raise click.UsageError("give --model (training from scratch) or --checkpoint (its config names the model)")
        try:
            model = detect(checkpoint).spec.name
        except CheckpointError as e:
            click.echo(f"ser-train: error: {e}", err=True)
            sys.exit(1)
    augment = None if no_augment else AugmentOptions(pitch_semitones=pitch_semitones, snr_db=noise_snr)
    options = TrainOptions(
        model=model,
        data=data,
        out=out or Path("runs") / model,
        checkpoint=checkpoint,
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=lr,
        weight_decay=weight_decay,
        warmup=warmup,
        dropout=dropout,
        freeze_encoder=freeze_encoder,
        class_weights=not no_class_weights,
        patience=patience,
        max_seconds=max_seconds,
        augment=augment,
        seed=seed,
        device=device,
        workers=workers,
    )
    try:
        result = train(options, show_progress=not quiet, resume=resume, overwrite=overwrite)
    except (TrainError, DataError, CheckpointError) as e:
        click.echo(f"ser-train: error: {e}", err=True)
        sys.exit(1)
    click.echo(
        f"{result.out}: best epoch {result.best_epoch} of {result.epochs_run}"
        f"{' (early stop)' if result.stopped_early else ''}; {result.held_out[0]} {result.held_out[1].summary()}"
    )
