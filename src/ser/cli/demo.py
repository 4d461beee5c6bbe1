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
    help="Folder for the generated clips and bundles.",
)
def demo_command(out: Path) -> None:
    """Export the four models at tiny size (random weights) and classify generated clips with each."""
    from ser.cli import setup_logging
    from ser.demo import run_demo

    setup_logging()
    answers = run_demo(out)
    click.echo("\nOne clip written in four formats and rates; each model should answer all four alike.")
    click.echo(f"{'model':<10} {'clip':<18} {'label':<10} score")
    for model, rows in answers.items():
        for clip, p in rows:
            click.echo(f"{model:<10} {clip.name:<18} {p.label:<10} {p.scores[p.label]:.2f}")
    infer = Path(sys.executable).parent / "ser-infer"
    click.echo(f"\nBundles in {out / 'bundles'}; try: {infer} {out / 'bundles' / 'wavlm'} {out / 'clips'}/*")
    click.echo("The tiny models have random weights, so these labels are arbitrary: the run shows the pipeline.")
