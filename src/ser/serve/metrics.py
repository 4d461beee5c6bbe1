"""Prometheus metrics of the service. With several worker processes (PROMETHEUS_MULTIPROC_DIR set),
each writes its own files and /metrics adds them up."""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ser_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=self.registry
        )
        self.errors = Counter(
            "ser_request_errors", "Requests answered 4xx or 5xx, by endpoint", ["endpoint"], registry=self.registry
        )
        self.latency = Histogram(
            "ser_request_latency_seconds", "Time to answer, by endpoint", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "ser_batch_size", "Clips per model call", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.inference = Histogram(
            "ser_inference_seconds", "Duration of one model call", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.queue_depth = Gauge(
            "ser_queue_depth", "Clips waiting for a batch", registry=self.registry, multiprocess_mode="livesum"
        )
        self.int8_cpu_mismatch = Gauge(
            "ser_int8_cpu_mismatch",
            "1 if the INT8 bundle's answers can differ on this CPU from what its accuracy gate checked",
            registry=self.registry,
            multiprocess_mode="max",
        )

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.latency.labels(endpoint).observe(seconds)
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint).inc()

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ObserveRequests:
    """ASGI middleware that counts and times every HTTP request by route. A plain ASGI wrapper rather
    than Starlette's BaseHTTPMiddleware, which runs each request in its own task group and streams
    the response through a queue: on a small model that was a tenth of the event loop's time."""

    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts: an exception that escaped

        async def send_observed(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            route = scope.get("route")  # the matched route's template: a bounded set of label values
            endpoint = getattr(route, "path", None) or "other"
            self.metrics.observe_request(endpoint, status, time.perf_counter() - started)
