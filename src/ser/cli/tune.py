"""`ser-tune`: measure every verified CPU backend on a bundle here and record the fastest for `auto`."""

from __future__ import annotations

import json
import sys

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle")
@click.option("--batch-sizes", default="1,4", show_default=True, help="Batches timed, comma-separated.")
@click.option("--seconds", type=click.FloatRange(min=0.5, max=60), default=4.0, show_default=True,
              help="Seconds of audio per clip.")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: the engines').")
@click.option("--runs", type=click.IntRange(min=3), default=7, show_default=True, help="Timed calls per case.")
@click.option("--json", "as_json", is_flag=True, help="The record as JSON on stdout.")
def tune_command(bundle: str, batch_sizes: str, seconds: float, threads: int | None, runs: int, as_json: bool) -> None:
    """Time ONNX Runtime and OpenVINO (where installed) on the BUNDLE folder on this CPU, and record in it the
    fastest verified one: `--backend auto` takes it on this kind of CPU from then on.

    An INT8 bundle runs as verified only on an engine its accuracy gate passed it on; an FP32 or FP16 one on an
    engine whose answers are within the bundle's tolerance of ONNX Runtime's. Exit 2 for an unusable bundle.
    """
    from ser.bench.tune import tune
    from ser.bundle import Bundle, BundleError
    from ser.runtime.base import BackendError

    try:
        batches = tuple(int(b) for b in batch_sizes.split(","))
        if not batches or min(batches) < 1:
            raise ValueError
    except ValueError:
        message = f"{batch_sizes!r}: positive integers, comma-separated"
        raise click.BadParameter(message, param_hint="--batch-sizes") from None
    try:
        result = tune(Bundle.load(bundle), batches, seconds, threads, runs)
    except (BundleError, BackendError) as e:
        click.echo(f"ser-tune: error: {e}", err=True)
        sys.exit(2)
    click.echo(json.dumps(result.to_dict()) if as_json else result.describe())
