"""Native TensorRT backend: a bundle's plan run by TensorRT's runtime, device memory through cuda-python.

Torch-free like the rest of the runtime. The rules that decide whether a plan may run here
(`plan_compatibility`) and which optimisation profile serves a call (`select_profile`) live here too:
the exporter writes what they read. Each thread gets its own execution context and CUDA stream
(TensorRT contexts are not thread-safe); shapes are set per call; with `cuda_graph=True` each
(profile, shape) is captured once as a CUDA graph and replayed, which removes the per-layer launch
cost that dominates small batches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ser.audio import SAMPLE_RATE
from ser.bundle import Bundle, TensorSpec
from ser.runtime.base import Backend, BackendError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: the batch sizes and clip lengths (in samples) an engine is tuned for."""

    batch: tuple[int, int, int]  # min, opt, max
    samples: tuple[int, int, int]

    def covers(self, batch: int, samples: int) -> bool:
        return self.batch[0] <= batch <= self.batch[2] and self.samples[0] <= samples <= self.samples[2]

    def shapes(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """min/opt/max shapes of each graph input, as TensorRT's IOptimizationProfile.set_shape takes them."""
        return {
            "audio": tuple((b, s) for b, s in zip(self.batch, self.samples, strict=True)),
            "lengths": tuple((b,) for b in self.batch),
        }


def select_profile(profiles: tuple[Profile, ...], batch: int, samples: int) -> int:
    """Index of the narrowest profile that covers a [batch, samples] input."""
    covering = [i for i, p in enumerate(profiles) if p.covers(batch, samples)]
    if not covering:
        widest = max(p.batch[2] for p in profiles), max(p.samples[2] for p in profiles) / SAMPLE_RATE
        raise BackendError(
            f"tensorrt: batch {batch} × {samples / SAMPLE_RATE:.2f} s is outside every optimisation profile "
            f"of this engine (up to batch {widest[0]} and {widest[1]:g} s): rebuild with a larger --max-batch or "
            "--max-seconds, or send shorter windows"
        )
    return min(
        covering,
        key=lambda i: (profiles[i].batch[2] - profiles[i].batch[0], profiles[i].samples[2] - profiles[i].samples[0]),
    )


@dataclass(frozen=True)
class GpuTarget:
    """What a plan is bound to: the GPU it was built on and the TensorRT that built it."""

    name: str
    compute_capability: str  # "9.0"
    tensorrt: str  # "10.1.0"


@dataclass(frozen=True)
class Compatibility:
    ok: bool
    reason: str  # why not, or "" when ok
    warning: str = ""  # runs, but not as tuned


def plan_compatibility(engine: dict[str, Any], here: GpuTarget) -> Compatibility:
    """Whether the plan `engine` (a manifest engine record) may run on `here`.

    TensorRT's rules: a plan runs only with the TensorRT version that built it (a version-compatible
    plan: the same major version, not older); only on the compute capability it was built for (a
    hardware-compatible "ampere+" plan: any capability from 8.0 up). Another GPU model of the same
    capability runs it, tuned for the other one.
    """
    built = engine["target"]
    if engine.get("version_compatible"):
        same_major = _version(here.tensorrt)[0] == _version(built["tensorrt"])[0]
        if not same_major or _version(here.tensorrt) < _version(built["tensorrt"]):
            return Compatibility(
                False,
                f"plan built with TensorRT {built['tensorrt']} (version-compatible) cannot run on TensorRT "
                f"{here.tensorrt}: it needs the same major version, not older",
            )
    elif here.tensorrt != built["tensorrt"]:
        return Compatibility(False, f"plan built with TensorRT {built['tensorrt']}, this machine has {here.tensorrt}")
    if engine.get("hardware_compatibility") == "ampere+":
        if _version(here.compute_capability) < (8, 0):
            return Compatibility(
                False,
                f"plan needs an Ampere or newer GPU (compute capability 8.0 or more), {here.name} is "
                f"{here.compute_capability}",
            )
    elif here.compute_capability != built["compute_capability"]:
        return Compatibility(
            False,
            f"plan built for compute capability {built['compute_capability']} ({built['name']}), {here.name} is "
            f"{here.compute_capability}",
        )
    warning = "" if here.name == built["name"] else f"plan was tuned on {built['name']}, running on {here.name}"
    return Compatibility(True, "", warning)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def unavailable_reason() -> str | None:
    """Why TensorRT cannot run here (no tensorrt, no cuda-python, no GPU), or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed here: pip install tensorrt (Linux or Windows with an NVIDIA GPU)"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "cuda-python 12.6.2 or newer is not installed here: pip install 'cuda-python>=12.6.2'"
    error, count = cudart.cudaGetDeviceCount()
    if error != cudart.cudaError_t.cudaSuccess or count == 0:
        return "no CUDA GPU is visible: TensorRT builds and runs engines on one"
    return None


def current_target(device: int = 0) -> GpuTarget:
    """This machine's GPU `device` and TensorRT version (needs tensorrt and cuda-python)."""
    import tensorrt as trt
    from cuda.bindings import runtime as cudart

    props = _cuda(cudart.cudaGetDeviceProperties(device), f"CUDA device {device}")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return GpuTarget(name.rstrip("\x00"), f"{props.major}.{props.minor}", trt.__version__)


def _cuda(result: tuple, what: str) -> Any:
    """Unwrap a cuda-python call's (error, *values), raising BackendError on an error."""
    from cuda.bindings import runtime as cudart

    error, *values = result
    if error != cudart.cudaError_t.cudaSuccess:
        raise BackendError(f"tensorrt: {what}: {cudart.cudaGetErrorString(error)[1].decode()}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


def pick_engine(engines: tuple[dict[str, Any], ...], here: GpuTarget) -> tuple[dict[str, Any], Compatibility]:
    """The first of a bundle's plans that may run on `here`; BackendError saying why none may."""
    if not engines:
        raise BackendError("tensorrt: this bundle has no TensorRT engine: export it with ser-export --trt")
    reasons = []
    for engine in engines:
        compatibility = plan_compatibility(engine, here)
        if compatibility.ok:
            return engine, compatibility
        reasons.append(f"{engine['file']}: {compatibility.reason}")
    raise BackendError(
        f"tensorrt: no plan in this bundle runs on {here.name} with TensorRT {here.tensorrt} (rebuild with "
        f"ser-export --trt on this machine): {'; '.join(reasons)}"
    )


class _ThreadState:
    """One thread's execution context, stream, device buffers (grown, never shrunk) and CUDA graphs."""

    def __init__(self, engine: Any):
        from cuda.bindings import runtime as cudart

        self.context = engine.create_execution_context()
        self.stream = _cuda(cudart.cudaStreamCreate(), "creating a stream")
        self.profile: int | None = None
        self.buffers: dict[str, tuple[int, int]] = {}  # name → (device pointer, bytes)
        self.graphs: dict[tuple, Any] = {}

    def buffer(self, name: str, nbytes: int) -> int:
        from cuda.bindings import runtime as cudart

        pointer, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _cuda(cudart.cudaFree(pointer), "freeing device memory")
            pointer = _cuda(cudart.cudaMalloc(nbytes), f"allocating {nbytes} bytes for {name!r}")
            self.buffers[name] = (pointer, nbytes)
            self.graphs.clear()  # captured graphs hold the old addresses
        return pointer

    def release(self) -> None:
        from cuda.bindings import runtime as cudart

        for graph in self.graphs.values():
            cudart.cudaGraphExecDestroy(graph)
        for pointer, _ in self.buffers.values():
            cudart.cudaFree(pointer)
        cudart.cudaStreamDestroy(self.stream)
        self.graphs, self.buffers, self.context = {}, {}, None


class TensorRTBackend(Backend):
    """Runs the first of `engines` (manifest engine records, plans in `folder`) that fits this machine."""

    def __init__(
        self,
        folder: Path,
        engines: tuple[dict[str, Any], ...],
        input_spec: tuple[TensorSpec, ...],
        device: int = 0,
        cuda_graph: bool = False,
    ):
        super().__init__(input_spec)
        self.name = "tensorrt"
        self.folder = Path(folder)
        self.engines = engines
        self.device = device
        self.cuda_graph = cuda_graph
        self._engine = None
        self._runtime = None
        self._profiles: tuple[Profile, ...] = ()
        self._dtypes: dict[str, np.dtype] = {}  # I/O tensor name → the engine's type for it
        self._local = threading.local()
        self._states: list[_ThreadState] = []
        self._lock = threading.Lock()

    @classmethod
    def from_bundle(cls, bundle: Bundle, device: int = 0, cuda_graph: bool = False) -> TensorRTBackend:
        return cls(bundle.path, bundle.manifest.engines, bundle.manifest.inputs, device, cuda_graph)

    def _activate(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise BackendError(f"tensorrt: {reason}")
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        _cuda(cudart.cudaSetDevice(self.device), f"selecting CUDA device {self.device}")
        engine, compatibility = pick_engine(self.engines, current_target(self.device))
        if compatibility.warning:
            log.warning("tensorrt: %s", compatibility.warning)
        self._profiles = tuple(Profile(tuple(p["batch"]), tuple(p["samples"])) for p in engine["profiles"])
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine((self.folder / engine["file"]).read_bytes())
        if self._engine is None:
            raise BackendError(f"tensorrt: could not deserialize {engine['file']} (see TensorRT's log above)")
        self._dtypes = {
            name: np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            for name in (self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors))
        }

    def _state(self) -> _ThreadState:
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = _ThreadState(self._engine)
            with self._lock:
                self._states.append(state)
        return state

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from cuda.bindings import runtime as cudart

        state = self._state()
        context, stream = state.context, state.stream
        batch, samples = feeds["audio"].shape
        profile = select_profile(self._profiles, batch, samples)
        if state.profile != profile:
            # Several contexts on one profile need TensorRT's profile sharing (8.6's PROFILE_SHARING_0806 preview
            # feature); unverified here, so a refusal is reported rather than ignored.
            if not context.set_optimization_profile_async(profile, int(stream)):
                raise BackendError(f"tensorrt: could not select optimisation profile {profile} (see TensorRT's log)")
            state.profile = profile
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        host = {name: np.ascontiguousarray(feeds[name], dtype=self._dtypes[name]) for name in ("audio", "lengths")}
        for name, array in host.items():
            context.set_input_shape(name, array.shape)
            pointer = state.buffer(name, array.nbytes)
            _cuda(
                cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, to_device, stream), f"copying {name}"
            )
            context.set_tensor_address(name, pointer)
        outputs = {}  # logits, and the embedding where the graph has one
        for name in (n for n in self._dtypes if n not in host):
            array = np.empty(tuple(context.get_tensor_shape(name)), dtype=self._dtypes[name])
            outputs[name] = (array, state.buffer(name, array.nbytes))
            context.set_tensor_address(name, outputs[name][1])
        if self.cuda_graph:
            self._launch_graph(state, (profile, batch, samples))
        elif not context.execute_async_v3(int(stream)):
            raise BackendError("tensorrt: execution failed (see TensorRT's log above)")
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, (array, pointer) in outputs.items():
            _cuda(cudart.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes, to_host, stream), f"copying {name}")
        _cuda(cudart.cudaStreamSynchronize(stream), "waiting for the stream")
        return {name: array.astype(np.float32, copy=False) for name, (array, _) in outputs.items()}

    def _launch_graph(self, state: _ThreadState, key: tuple) -> None:
        """Replay the CUDA graph captured for `key`, capturing it on first use. TensorRT needs one ordinary
        run after a shape change before capture, so a new shape runs once, then through its graph."""
        from cuda.bindings import runtime as cudart

        graph = state.graphs.get(key)
        if graph is None:
            if not state.context.execute_async_v3(int(state.stream)):
                raise BackendError("tensorrt: execution failed (see TensorRT's log above)")
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            _cuda(cudart.cudaStreamBeginCapture(state.stream, mode), "starting a CUDA graph capture")
            state.context.execute_async_v3(int(state.stream))
            captured = _cuda(cudart.cudaStreamEndCapture(state.stream), "ending the CUDA graph capture")
            graph = state.graphs[key] = _cuda(cudart.cudaGraphInstantiate(captured, 0), "instantiating the CUDA graph")
            cudart.cudaGraphDestroy(captured)
        _cuda(cudart.cudaGraphLaunch(graph, state.stream), "launching the CUDA graph")

    def _deactivate(self) -> None:
        with self._lock:
            for state in self._states:
                state.release()
            self._states = []
        self._local = threading.local()
        self._engine = self._runtime = None
