"""`ser-serve`: the HTTP service for one bundle."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from ser.runtime.recognizer import BACKENDS


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; loopback unless told.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=16, show_default=True, help="Clips per model call.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Wait for company.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes, each a model.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Model copies per worker running batches at once, each in its own process when more than one "
                   "(small models: more throughput).")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads per model instance. Default: the runtime's, or the CPUs shared out.")  # fmt: skip
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True, help="As ser-infer's.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0.001), default=25.0, show_default=True)
@click.option("--max-seconds", type=click.FloatRange(min=0.1), default=60.0, show_default=True, help="/v1/predict.")
@click.option("--max-timeline-seconds", type=click.FloatRange(min=0.1), default=3600.0, show_default=True)
@click.option("--max-queue", type=click.IntRange(min=1), default=256, show_default=True, help="Then 503.")
@click.option("--timeout-s", type=click.FloatRange(min=0.01), default=30.0, show_default=True, help="Then 504.")
@click.option("--max-timeline-windows", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Windows one /v1/timeline request may make; then 422.")  # fmt: skip
@click.option("--body-timeout-s", type=click.FloatRange(min=0.01), default=30.0, show_default=True,
              help="A request body not in full by then gets 408.")  # fmt: skip
@click.option("--keep-alive-s", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="A connection without a complete request head for this long (idle, or slow) is closed.")  # fmt: skip
@click.option("--max-connections", type=click.IntRange(min=1), default=256, show_default=True,
              help="Concurrent connections and requests per worker; more get 503.")  # fmt: skip
@click.option("--strict-cpu", is_flag=True,
              help="As ser-infer's: refuse an INT8 bundle gated on another kind of CPU or another engine.")  # fmt: skip
@click.option("--log-level", type=click.Choice(["warning", "info", "debug"]), default="info", show_default=True)
def serve_command(
    bundle: Path,
    host: str,
    port: int,
    max_batch: int,
    max_wait_ms: float,
    workers: int,
    instances: int,
    threads: int | None,
    backend: str,
    max_upload_mb: float,
    max_seconds: float,
    max_timeline_seconds: float,
    max_queue: int,
    timeout_s: float,
    max_timeline_windows: int,
    body_timeout_s: float,
    keep_alive_s: float,
    max_connections: int,
    strict_cpu: bool,
    log_level: str,
) -> None:
    """Serve BUNDLE over HTTP: POST /v1/predict, POST /v1/timeline, GET /healthz, /readyz, /metrics,
    and the OpenAPI schema at /openapi.json (docs at /docs)."""
    import uvicorn

    from ser.bundle import Bundle, BundleError
    from ser.cli import setup_logging
    from ser.serve.app import SETTINGS_ENV, ServeSettings, app_from_environment, create_app
    from ser.serve.protocol import server_options

    setup_logging()
    logging.getLogger("ser").setLevel(log_level.upper())  # --log-level is ser's too, not uvicorn's alone
    try:
        Bundle.load(bundle)  # refuse a broken bundle before binding the port
    except BundleError as e:
        click.echo(f"ser-serve: error: {e}", err=True)
        sys.exit(2)
    settings = ServeSettings(
        bundle=str(bundle.resolve()),
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_upload_mb=max_upload_mb,
        max_seconds=max_seconds,
        max_timeline_seconds=max_timeline_seconds,
        timeout_s=timeout_s,
        max_timeline_windows=max_timeline_windows,
        body_timeout_s=body_timeout_s,
        keep_alive_s=keep_alive_s,
        max_connections=max_connections,
        strict_cpu=strict_cpu,
        backend=backend,
        threads=threads,
        instances=instances,
    )
    server = dict(host=host, port=port, log_level=log_level, **server_options(keep_alive_s, max_connections))
    if workers == 1:
        uvicorn.run(create_app(settings), **server)
        return
    os.environ[SETTINGS_ENV] = settings.to_env()
    own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    if own_metrics_dir:  # each worker writes its counts here; /metrics adds them up
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ser-serve-metrics-")
    app = f"{app_from_environment.__module__}:{app_from_environment.__name__}"
    try:
        uvicorn.run(app, factory=True, workers=workers, **server)
    finally:
        if own_metrics_dir:
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
