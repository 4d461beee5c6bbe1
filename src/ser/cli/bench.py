"""`ser-bench`: run a benchmark suite, or compare two runs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def bench_command() -> None:
    """Latency and accuracy of every backend against the original PyTorch models, side by side."""


@bench_command.command("run")
@click.argument("suite", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Results folder: results.json, results.csv, report.md, plots, bundles and worker logs.",
)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (once the new run is complete).")
def run_command(suite: Path, out: Path, overwrite: bool) -> None:
    """Run the matrix declared in the YAML file SUITE (see benchmarks/suites/)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ser.bench.report import REPORT_NAME, print_table
    from ser.bench.run import run_suite
    from ser.bench.suite import SuiteError, load_suite
    from ser.cli import setup_logging, stop_on_sigterm

    setup_logging(verbose=False)
    stop_on_sigterm()
    logging.getLogger().setLevel(logging.ERROR)  # ONNX Runtime's quantizer advises on the root logger
    try:
        loaded = load_suite(suite)
    except SuiteError as error:
        raise click.BadParameter(str(error), param_hint="SUITE") from None
    if out.exists() and not overwrite:
        raise click.BadParameter(f"{out} already exists; choose another --out or pass --overwrite", param_hint="--out")
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        results = run_suite(loaded, out, overwrite=overwrite, progress=progress)
    print_table(results)
    failed = sum(1 for config in results.configs if config.error)
    click.echo(f"{out / REPORT_NAME} ({len(results.configs)} configurations, {failed} failed)")


@bench_command.command("compare")
@click.argument("before", type=click.Path(path_type=Path))
@click.argument("after", type=click.Path(path_type=Path))
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Smallest change in median latency that counts, as a fraction, besides the noise interval.",
)
@click.option("--fail-on-regression", is_flag=True, help="Exit with status 1 when any case got slower.")
def compare_command(before: Path, after: Path, threshold: float, fail_on_regression: bool) -> None:
    """Compare two runs (results.json files or their folders): B over A, per configuration and case."""
    from ser.bench.compare import compare, load_results, print_changes, unmatched

    try:
        a, b = load_results(before), load_results(after)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    changes = compare(a, b, threshold)
    if not changes:
        raise click.ClickException("the two runs have no configuration and case in common")
    print_changes(changes, *unmatched(a, b))
    slower = [c for c in changes if c.verdict == "slower"]
    if slower and fail_on_regression:
        click.echo(f"{len(slower)} case(s) slower beyond noise and the {threshold:.0%} threshold", err=True)
        sys.exit(1)


if __name__ == "__main__":
    bench_command()
