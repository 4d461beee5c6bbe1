"""`ser demo`: the built-in end-to-end run behind `make demo`."""

from __future__ import annotations

import sys
from pathlib import Path

import click


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
    from ser.demo import CLIPS_PER_CLASS, run_demo
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
