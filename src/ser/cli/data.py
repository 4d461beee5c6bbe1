"""`ser-data`: look at a labelled audio folder before training on it, or generate the demo corpus."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data_command() -> None:
    """Check a dataset, or synthesise the demo corpus."""


@data_command.command("check")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
def check_command(data: Path, as_json: bool) -> None:
    """Counts per emotion, durations, sample rates and unreadable files of DATA (an emotion-folder tree
    or a path,label CSV). Unreadable files are listed and skipped; they never stop the check."""
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from ser.data.corpus import Corpus, DataError, check_corpus

    console = Console(stderr=True)
    try:
        corpus = Corpus.from_path(data)
    except DataError as e:
        click.echo(f"ser-data: error: {e}", err=True)
        sys.exit(2)
    steps = iter(track(range(len(corpus.clips)), description="decoding", console=console, transient=True))
    report = check_corpus(corpus, progress=lambda: next(steps, None))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    out = Console(soft_wrap=True)  # paths stay whole when piped
    counts = Table(title=f"{data}: {sum(report.counts.values())} readable clips")
    counts.add_column("emotion")
    counts.add_column("clips", justify="right")
    for label, n in report.counts.items():
        counts.add_row(label, str(n))
    out.print(counts)
    if report.durations:
        d = report.durations
        out.print(
            f"duration (s): min {d['min']:.2f}  median {d['median']:.2f}  mean {d['mean']:.2f}  "
            f"max {d['max']:.2f}  total {d['total'] / 3600:.2f} h"
        )
    out.print("sample rates: " + ", ".join(f"{rate} Hz × {n}" for rate, n in report.sample_rates.items()))
    for where in report.ignored:
        out.print(f"[yellow]ignored[/] {where}")
    for path, reason in report.unreadable:
        out.print(f"[red]unreadable[/] {path}: {reason}")


@data_command.command("synth")
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder to write (one subfolder per emotion)."
)
@click.option("--per-class", type=click.IntRange(min=1), default=60, show_default=True, help="Clips per emotion.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same corpus.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder (atomically).")
def synth_command(out: Path, per_class: int, seed: int, overwrite: bool) -> None:
    """Speak a demo corpus with espeak-ng: the same sentences in seven emotional prosodies."""
    from rich.progress import Progress

    from ser.cli import stop_on_sigterm
    from ser.data.synth import SynthError, synthesize_corpus
    from ser.labels import LABELS

    stop_on_sigterm()
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task("speaking", total=per_class * len(LABELS))
            synthesize_corpus(out, per_class, seed, overwrite, progress=lambda: progress.advance(task))
    except (SynthError, FileExistsError) as e:
        click.echo(f"ser-data: error: {e}", err=True)
        sys.exit(1)
    click.echo(f"{out}: {per_class * len(LABELS)} clips, {per_class} per emotion")
