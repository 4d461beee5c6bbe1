"""The HTTP service: FastAPI over ser.runtime, with micro-batching, limits and Prometheus metrics.

Every request is decoded on its own (a bad file is that request's 4xx, never its batch's), then its
samples join the micro-batcher. Errors are JSON: {"error": {"status": ..., "message": ...}}.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ser.answer import AnswerSpec
from ser.audio import SAMPLE_RATE, AudioError, load_audio
from ser.bundle import Bundle
from ser.runtime import oip
from ser.runtime.recognizer import EmotionRecognizer, Prediction, window_bounds
from ser.serve import v2
from ser.serve.batcher import Clip, MicroBatcher, NoInstanceError, QueueFullError
from ser.serve.instances import InstanceDied, ProcessInstance
from ser.serve.metrics import ObserveRequests, ServiceMetrics

log = logging.getLogger(__name__)
SETTINGS_ENV = "SER_SERVE_SETTINGS"  # how `--workers N` hands the settings to each worker process
RAW_AUDIO_TYPES = ("audio/", "application/octet-stream")
WARMUP_SECONDS = 2
# A request body up to this size is decoded on the batch's thread (an 8 s 16 kHz WAV: under a millisecond
# or two), saving a thread hand-off; a larger one (a minute of 44.1 kHz FLAC decodes in ~0.2 s) in the
# thread pool, so it never holds up the batch it would join.
BATCH_THREAD_DECODE_BYTES = 256 * 1024
HUNG_AFTER_S = 10.0  # the shortest time a model instance's process may hold a batch before it is killed


@dataclass(frozen=True)
class ServeSettings:
    bundle: str
    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 256  # requests waiting beyond this get 503
    max_upload_mb: float = 25.0
    max_seconds: float = 60.0  # longest clip /v1/predict takes
    max_timeline_seconds: float = 3600.0  # longest recording /v1/timeline takes
    max_timeline_windows: int = 10_000  # most windows one /v1/timeline request may ask for (then 422)
    timeout_s: float = 30.0  # a request (a timeline: each batch of its windows) waiting longer gets 504
    body_timeout_s: float = 30.0  # a request body that has not fully arrived by then gets 408
    keep_alive_s: float = 5.0  # a connection without a complete request head for this long is closed
    max_connections: int = 256  # concurrent connections and requests; more get 503 from the server
    backend: str = "auto"
    threads: int | None = None  # per instance; default: the model's own choice, or the CPUs shared out
    instances: int = 1  # model copies running batches at once (Triton's instance count)
    strict_cpu: bool = False  # refuse to start with an INT8 bundle whose answers can differ on this CPU

    def to_env(self) -> str:
        return json.dumps(asdict(self))


def shared_threads(instances: int) -> int | None:
    """Default CPU threads per model instance: the runtime's own choice for one, this process's CPUs
    shared out for several (instances that each took every core would contend)."""
    return None if instances == 1 else max(1, len(os.sched_getaffinity(0)) // instances)


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _Answer(BaseModel):
    """A categorical bundle answers label, canonical and scores; a dimensional one answers dimensions
    (ser.answer.Prediction.to_dict); embedding where the bundle was exported with one."""

    label: str | None = None
    canonical: str | None = None  # the label as one of ser's seven, where it has a counterpart
    scores: dict[str, float] | None = None
    dimensions: dict[str, float] | None = None  # e.g. arousal, dominance, valence, in the model's order
    embedding: list[float] | None = None


class PredictResponse(_Answer):
    duration_s: float


class WindowResponse(_Answer):
    start_s: float
    end_s: float


class TimelineResponse(_Answer):
    duration_s: float
    windows: list[WindowResponse]


_AUDIO_BODY = {
    "requestBody": {
        "required": True,
        "description": "An audio file (wav, flac, ogg, mp3): multipart form field `file`, or the raw body.",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_ERRORS = {code: {"description": why} for code, why in [
    (408, "the request body did not arrive in time"),
    (413, "upload too large"),
    (415, "unsupported content type"),
    (422, "not decodable audio, too short or too long, or bad parameters"),
    (503, "not ready, or too many requests waiting"),
    (504, "no answer within the timeout"),
]}  # fmt: skip


@dataclass(frozen=True)
class _Loaded:
    """The model being served: what its bundle says, and the batcher over its instances."""

    bundle: Bundle
    cpu_warning: str | None  # the INT8 bundle's answers may differ on this CPU (EmotionRecognizer.cpu_warning)
    batcher: MicroBatcher[Prediction]
    instances: list[EmotionRecognizer] | list[ProcessInstance]

    @property
    def name(self) -> str:
        return self.bundle.manifest.model.name

    @property
    def answer(self) -> AnswerSpec:
        return self.bundle.manifest.answer_spec


class _Service:
    """The service's state and steps: the model once loaded, readiness, answering through the batcher."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.loaded: _Loaded | None = None

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        settings = self.settings
        threads = settings.threads if settings.threads is not None else shared_threads(settings.instances)
        # Warm up at the largest batch, so the runtime's memory arena has grown before traffic arrives.
        warm = [np.zeros(WARMUP_SECONDS * SAMPLE_RATE, dtype=np.float32)] * settings.max_batch
        load = (settings.bundle, settings.backend, threads, settings.strict_cpu)
        instances: list[EmotionRecognizer] | list[ProcessInstance]
        if settings.instances == 1:  # in this process: no pipe, and the model's own threads do the parallel work
            recognizer = await run_in_threadpool(EmotionRecognizer.load, *load)
            await run_in_threadpool(recognizer.classify, warm)
            instances, infers = [recognizer], [recognizer.classify]
            bundle, cpu_warning = recognizer.bundle, recognizer.cpu_warning
        else:  # each in its own process, as Triton's Python backend runs its instance group
            # A batch still unanswered at twice the requests' timeout has no one waiting: its child is hung.
            # Never sooner than HUNG_AFTER_S: a reload costs seconds, and a slow batch under a short timeout
            # is not a hang.
            hang_s = max(2 * settings.timeout_s, HUNG_AFTER_S)
            start = partial(ProcessInstance.start_all, hang_s=hang_s)
            instances = await run_in_threadpool(start, settings.instances, *load, warm)
            infers = instances
            bundle, cpu_warning = instances[0].bundle, instances[0].cpu_warning  # as its child verified it
        batcher: MicroBatcher[Prediction] = MicroBatcher(
            infers,
            settings.max_batch,
            settings.max_wait_ms / 1000,
            settings.max_queue,
            on_batch=self.metrics.observe_batch,
            on_depth=self.metrics.queue_depth.set,
        )
        batcher.start()
        # Everything loaded so far lives as long as the process: out of the cyclic collector's sight,
        # its collections under load scan only what requests allocate (benchmarks/RESULTS.md).
        gc.freeze()
        self.metrics.int8_cpu_mismatch.set(1 if cpu_warning else 0)
        self.loaded = _Loaded(bundle, cpu_warning, batcher, instances)
        log.info("serving %s (%s), max batch %d, %d instance(s)", settings.bundle,
                 self.loaded.name, settings.max_batch, settings.instances)  # fmt: skip
        try:
            yield
        finally:
            self.loaded = None
            await batcher.stop()
            for instance in instances:
                await run_in_threadpool(instance.close)

    @property
    def ready(self) -> bool:
        return self.loaded is not None and self.loaded.batcher.running

    def model(self) -> _Loaded:
        if self.loaded is None:
            raise ApiError(503, "the model is not loaded yet")
        return self.loaded

    def named(self, name: str) -> _Loaded:
        """The model, if `name` is its name (the Open Inference Protocol addresses models by name)."""
        loaded = self.model()
        if name != loaded.name:
            raise ApiError(404, f"no model {name!r}; this server has {loaded.name!r}")
        return loaded

    async def answer(self, clips: Sequence[Clip], bad_audio: int = 422) -> list[Prediction]:
        """Answers for `clips` (samples, or the calls that decode them where the batch runs), submitted
        at most a batch at a time so a long timeline neither fills the queue nor runs into the timeout,
        which applies to each batch's wait. A clip that does not decode, or whose answer is not finite, is
        the request's `bad_audio` (the route's status for it)."""
        batcher, settings = self.model().batcher, self.settings
        answers: list[Prediction] = []
        for start in range(0, len(clips), settings.max_batch):
            chunk = clips[start : start + settings.max_batch]
            try:
                async with asyncio.timeout(settings.timeout_s):  # on the request's own task: none created
                    if len(chunk) == 1:
                        answers.append(await batcher.submit(chunk[0]))
                    else:
                        answers += await asyncio.gather(*(batcher.submit(c) for c in chunk))
            except (QueueFullError, NoInstanceError, InstanceDied) as e:
                raise ApiError(503, str(e)) from None
            except AudioError as e:  # a clip that did not decode, or the model's answer was not finite
                raise ApiError(bad_audio, str(e)) from None
            except TimeoutError:
                raise ApiError(504, f"no answer within {settings.timeout_s} s; the service is overloaded") from None
        return answers


class ServeApp(FastAPI):
    """FastAPI, but POST /v2/models/{name}/infer, the route a client calls under load, goes straight to
    InferRoute (counted by ObserveRequests) ahead of FastAPI's own middleware (server errors, telemetry,
    body limit), its exception middleware, router and request handler. Profiled under load on a small
    model, those layers held over a third of the event loop's busy time (benchmarks/RESULTS.md); InferRoute
    catches its own errors and answers them as every /v2 route does."""

    infer: Any = None  # set by create_app: the infer route's ASGI callable
    infer_route: InferRoute | None = None  # the route itself, which ser-serve's protocol answers without ASGI

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and InferRoute.model_name(scope["path"]):
            await self.infer(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: ServeSettings) -> ServeApp:
    service = _Service(settings)
    app = ServeApp(
        title="ser",
        summary="Speech emotion recognition: the label and the seven scores for a clip, or per window of a recording.",
        version=_version(),
        lifespan=service.lifespan,
    )
    _handle_errors(app)

    app.infer_route = InferRoute(service)
    app.infer = ObserveRequests(app.infer_route, metrics=service.metrics)
    app.add_middleware(ObserveRequests, metrics=service.metrics)
    _document_infer(app)

    _v1_routes(app, service)
    _v2_routes(app, service)
    _health_routes(app, service)
    return app


def _handle_errors(app: FastAPI) -> None:
    """Every error in the JSON form (the Open Inference Protocol's own under /v2); nothing escapes as HTML."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        if request.url.path.startswith("/v2"):  # the Open Inference Protocol's error form
            return JSONResponse({"error": error.message}, status_code=error.status)
        return _error(error.status, error.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return _error(422, problems)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, error: ClientDisconnect) -> Response:
        log.info("%s %s: the client disconnected before its request was read", _client(request), request.url.path)
        return _error(499, "client disconnected")  # nobody reads it; the access log and metrics do

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))  # e.g. a malformed multipart body

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, f"internal error: {type(error).__name__}: {error}")


def _v1_routes(app: FastAPI, service: _Service) -> None:
    settings = service.settings

    @app.post("/v1/predict", response_model=PredictResponse, openapi_extra=_AUDIO_BODY, responses=_ERRORS)
    async def predict(request: Request) -> JSONResponse:
        """The emotion of one clip: its label and scores, or its dimensions, as the bundle answers."""
        service.model()
        data, name = await _read_upload(request, settings)
        decode = partial(load_audio, data, name=name, max_seconds=settings.max_seconds)
        (prediction,) = await service.answer(await _decoded_where_cheap(len(data), [decode], 422))
        return JSONResponse(prediction.to_dict())

    @app.post("/v1/timeline", response_model=TimelineResponse, openapi_extra=_AUDIO_BODY, responses=_ERRORS)
    async def timeline(
        request: Request,
        window_s: float = Query(2.0, ge=0.1, le=30.0, allow_inf_nan=False, description="Window length in seconds."),
        hop_s: float = Query(
            1.0, gt=0.0, le=30.0, allow_inf_nan=False, description="Step between window starts in seconds."
        ),
    ) -> JSONResponse:
        """The emotion per window of a long recording, and overall (the duration-weighted mean of the windows'
        scores or dimensions)."""
        model = service.model()
        if hop_s > window_s:
            raise ApiError(422, f"hop_s ({hop_s}) must not exceed window_s ({window_s})")
        samples = await _read_samples(request, settings, settings.max_timeline_seconds)
        try:
            bounds = window_bounds(len(samples), window_s, hop_s, settings.max_timeline_windows)
        except ValueError as e:
            raise ApiError(422, str(e)) from None
        predictions = await service.answer([samples[a:b] for a, b in bounds])
        result = model.answer.timeline(bounds, predictions, SAMPLE_RATE, len(samples))
        return JSONResponse(result.to_dict())


def _v2_routes(app: FastAPI, service: _Service) -> None:
    """The Open Inference Protocol (KServe v2), as Triton speaks it."""

    @app.get("/v2/health/live")
    async def v2_live() -> dict[str, bool]:
        """Open Inference Protocol: the server is live."""
        return {"live": True}

    @app.get("/v2/health/ready", responses={503: {"description": "not ready"}})
    async def v2_ready() -> JSONResponse:
        """Open Inference Protocol: the model is loaded and the batcher runs."""
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    @app.get("/v2")
    async def v2_server() -> dict:
        """Open Inference Protocol: server metadata."""
        return {"name": "ser", "version": _version(), "extensions": ["binary_tensor_data"]}

    @app.get("/v2/models/{name}")
    async def v2_model(name: str) -> dict:
        """Open Inference Protocol: the model's tensors (ser.runtime.oip) and labels."""
        manifest = service.named(name).bundle.manifest
        return {
            "name": name,
            "versions": ["1"],
            "platform": "ser",
            "inputs": list(oip.INPUTS),
            "outputs": oip.outputs_metadata(manifest.answer_spec, manifest.embedding_size),
            "parameters": {
                "answer": manifest.answer["kind"],
                manifest.answer["kind"]: list(manifest.labels),  # "categories" or "dimensions": their names
                "labels": list(manifest.labels),
                "precision": manifest.precision,
            },
        }

    @app.get("/v2/models/{name}/ready", responses={503: {"description": "not ready"}})
    async def v2_model_ready(name: str) -> JSONResponse:
        service.named(name)
        return JSONResponse({"name": name, "ready": True})


class InferRoute:
    """POST /v2/models/{name}/infer in plain ASGI (ServeApp routes it here). Its answers and errors are
    the Open Inference Protocol's, as every /v2 route gives them. It stands as the route in the request's
    scope, so the metrics label it by `path`."""

    path = "/v2/models/{name}/infer"
    DESCRIPTION = (
        "AUDIO_FILE (BYTES, binary extension) or AUDIO + LENGTHS in, LABEL and SCORES out (DIMENSIONS for a "
        "dimensional bundle; EMBEDDING where it has one); clips join the same micro-batcher as /v1."
    )

    def __init__(self, service: _Service):
        self.service = service

    @staticmethod
    def model_name(path: str) -> str:
        """The model's name if `path` is an infer route's, else ''."""
        if not (path.startswith("/v2/models/") and path.endswith("/infer")):
            return ""
        name = path[len("/v2/models/") : -len("/infer")]
        return "" if "/" in name else name

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        name = self.model_name(scope["path"])
        scope["route"] = self
        extra: list[tuple[bytes, bytes]] = []
        if scope["method"] == "POST":
            request = Request(scope, receive)
            try:
                body = await _read_raw(request, self.service.settings)
            except ApiError as e:
                status, answer = e.status, _json({"error": e.message})
            except ClientDisconnect:
                log.info("%s %s: the client disconnected before its request was read", _client(request), scope["path"])
                status, answer = 499, _json({"error": "client disconnected"})  # nobody reads it; the log and metrics do
            else:
                status, answer = await self.respond(name, body, request.headers.get(v2.HEADER_LENGTH))
        else:
            status, answer = 405, _json({"error": f"{scope['method']} is not allowed here; POST"})
            extra = [(b"allow", b"POST")]
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    async def respond(self, name: str, body: bytes, header_length: str | None) -> tuple[int, bytes]:
        """(status, JSON body) for an infer request's whole body, however it arrived: through ASGI above, or
        straight from ser-serve's HTTP protocol (ser.serve.protocol). Never raises."""
        service = self.service
        try:
            model = service.named(name)
            try:
                header, tensors = v2.parse_infer_request(body, header_length)
                decoders = oip.clip_decoders(tensors, service.settings.max_seconds)
            except (v2.ProtocolError, AudioError) as e:
                raise ApiError(400, str(e)) from None
            predictions = await service.answer(await _decoded_where_cheap(len(body), decoders, 400), bad_audio=400)
            outputs = oip.output_tensors(predictions, model.answer)
            return 200, _json(v2.infer_response(name, header, outputs))
        except ApiError as e:
            return e.status, _json({"error": e.message})
        except Exception as e:
            log.exception("unexpected error on /v2/models/%s/infer", name)
            return 500, _json({"error": f"internal error: {type(e).__name__}: {e}"})


_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))  # as JSONResponse renders


def _json(content: Any) -> bytes:
    """JSON as Starlette's JSONResponse renders it."""
    return _JSON.encode(content).encode("utf-8")


def _document_infer(app: FastAPI) -> None:
    """Add InferRoute's operation to the OpenAPI schema FastAPI builds from its own routes."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema["paths"][InferRoute.path] = {
                "post": {
                    "summary": "Open Inference Protocol inference",
                    "description": InferRoute.DESCRIPTION,
                    "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "the outputs, as JSON tensors"},
                        **{str(code): info for code, info in _ERRORS.items()},
                        "400": {"description": "not an inference request"},
                        "404": {"description": "no model of that name"},
                    },
                }
            }
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _health_routes(app: FastAPI, service: _Service) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "not ready"}})
    async def readyz() -> JSONResponse:
        """The model is loaded and the batcher runs: send traffic."""
        if service.ready and service.loaded is not None:
            model = service.loaded
            warnings = [model.cpu_warning] if model.cpu_warning else []
            return JSONResponse({"status": "ready", "model": model.name, "warnings": warnings})
        return _error(503, "not ready")

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format: requests, errors, latency, batch sizes, queue depth."""
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)


async def _read_samples(request: Request, settings: ServeSettings, max_seconds: float) -> np.ndarray:
    """The request's audio, decoded to 16 kHz mono, within the size, time and duration limits.

    Decoding runs in the thread pool, never on the event loop, and refuses from the header alone
    audio over `max_seconds` or at an absurd rate.
    """
    data, name = await _read_upload(request, settings)
    try:
        return await run_in_threadpool(load_audio, data, name=name, max_seconds=max_seconds)
    except AudioError as e:
        raise ApiError(422, str(e)) from None


async def _read_upload(request: Request, settings: ServeSettings) -> tuple[bytes, str]:
    """The uploaded file's bytes and name; the body must arrive within `body_timeout_s` (408)."""
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            return await _read_body(request, settings)
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {settings.body_timeout_s:g} s") from None


async def _decoded_where_cheap(size: int, decoders: list[Callable[[], np.ndarray]], bad_audio: int) -> list[Clip]:
    """The decode calls themselves, for the batch to run (on its thread, or in its instance's process), if
    the body of `size` bytes is small; else the clips, decoded in the thread pool (a file that does not
    decode: `bad_audio`, the route's status for it)."""
    if size <= BATCH_THREAD_DECODE_BYTES:
        return list(decoders)
    try:
        return await run_in_threadpool(lambda: [decode() for decode in decoders])
    except AudioError as e:
        raise ApiError(bad_audio, str(e)) from None


async def _read_body(request: Request, settings: ServeSettings) -> tuple[bytes, str]:
    limit = int(settings.max_upload_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"upload of {int(declared)} bytes is over the limit of {limit} bytes")
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(422, "multipart upload needs the audio in a file field named 'file'")
        data = await upload.read(limit + 1)
        name = upload.filename or "file"
    elif content_type.startswith(RAW_AUDIO_TYPES):
        data, name = await _stream(request, limit), "body"
    else:
        raise ApiError(
            415,
            f"content type {content_type or '(none)'!r}: send multipart/form-data, audio/* or application/octet-stream",
        )
    if len(data) > limit:
        raise ApiError(413, f"upload is over the limit of {limit} bytes")
    return data, name


async def _stream(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it passes `limit` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"upload is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_raw(request: Request, settings: ServeSettings) -> bytes:
    """The whole body, within the upload limit and the body deadline."""
    limit = int(settings.max_upload_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"upload of {int(declared)} bytes is over the limit of {limit} bytes")
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            return await _stream(request, limit)
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {settings.body_timeout_s:g} s") from None


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "client"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


def _version() -> str:
    from ser import __version__

    return __version__


def app_from_environment() -> ServeApp:
    """Factory for uvicorn worker processes: the settings come in SER_SERVE_SETTINGS."""
    return create_app(ServeSettings(**json.loads(os.environ[SETTINGS_ENV])))
