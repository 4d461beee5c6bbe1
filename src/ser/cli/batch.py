"""`ser-batch`: score every audio file under a path, glob or list with a bundle, on Ray, into Parquet."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import click

from ser.runtime.recognizer import BACKENDS


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle")
@click.argument("source")
@click.option("--out", "output", required=True, help="Folder of Parquet parts (local or s3://); rerun to resume.")
@click.option(
    "--address",
    default=None,
    help="An existing Ray cluster (auto, ray://head:10001, ...). Default: a Ray started for the job on this "
    "machine's cores.",
)
@click.option("--actors", type=click.IntRange(min=1), default=None, help="Model actors. Default: as many as fit.")
@click.option(
    "--cpus-per-actor",
    type=click.FloatRange(min=0.01),
    default=None,
    help="CPUs Ray gives each model actor; its ONNX Runtime runs that many threads. Default: a node's CPUs less "
    "a reader's quarter (shared among --actors if given).",
)
@click.option("--gpus-per-actor", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True, help="As ser-infer's.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Clips per model call.")
@click.option("--max-seconds", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Longer files are error rows, refused from their header.")  # fmt: skip
@click.option("--part-rows", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Rows per Parquet part (a part is also written every 30 s).")  # fmt: skip
@click.option("--s3-endpoint", default=None, help="An S3-compatible server (MinIO, Ceph, ...) for s3:// paths.")
@click.option("--json", "as_json", is_flag=True, help="Progress and the summary as JSON lines on stdout.")
def batch_command(
    bundle: str,
    source: str,
    output: str,
    address: str | None,
    actors: int | None,
    cpus_per_actor: float | None,
    gpus_per_actor: float,
    backend: str,
    batch_size: int,
    max_seconds: float,
    part_rows: int,
    s3_endpoint: str | None,
    as_json: bool,
) -> None:
    """Score every audio file SOURCE names with the BUNDLE folder, into Parquet parts under --out.

    SOURCE is a folder, a glob (`calls/**/*.wav`), a CSV or Parquet list with a `path` column, or one file;
    local or s3://. Each file is one row: path, label, canonical, a score per label (or the dimensions),
    duration_s, bundle_id and error. A file that fails is a row with its error and the job goes on; files the
    output already holds from this bundle are skipped, so an interrupted job resumes by running it again.
    Exit status: 0, or 1 if any file failed, 2 if the bundle, source or cluster is unusable, 130 interrupted.
    """
    from ser.batch import BatchError, BatchOptions, JobInterrupted, Storage, score_files
    from ser.bundle import BundleError
    from ser.cli import setup_logging, stop_on_sigterm

    setup_logging(verbose=False)
    stop_on_sigterm()

    def report(event: str, record: dict) -> None:
        click.echo(json.dumps({"event": event, **record}))

    def on_progress(progress) -> None:
        if as_json:
            report("progress", {**asdict(progress), "files_per_s": progress.files_per_s,
                                "audio_hours_per_s": progress.audio_hours_per_s})  # fmt: skip
        else:
            click.echo(progress.describe(), err=True)

    options = BatchOptions(
        backend=backend,
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor,
        batch_size=batch_size,
        max_seconds=max_seconds,
        part_rows=part_rows,
        address=address,
        storage=Storage(s3_endpoint=s3_endpoint),
    )
    try:
        summary = score_files(source, bundle, output, options, on_progress)
    except (BundleError, BatchError) as e:
        click.echo(f"ser-batch: error: {e}", err=True)
        sys.exit(2)
    except JobInterrupted as e:
        if as_json:
            report("summary", e.summary.to_dict())
        click.echo(f"ser-batch: {e.summary.describe()}; run the same command again to finish", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("ser-batch: interrupted before any file was scored", err=True)
        sys.exit(130)
    if as_json:
        report("summary", summary.to_dict())
    else:
        click.echo(summary.describe())
    sys.exit(1 if summary.errors else 0)
