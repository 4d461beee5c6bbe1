"""`ser tune`: time every CPU backend installed here on a bundle, and record the fastest verified one where
`auto` reads it (`ser.runtime.tuning`).

Verified means: for an INT8 bundle, a backend its accuracy gate passed it on, on a CPU of the INT8 numerics
the gate ran on; for FP32 and FP16, answers within the bundle's validation tolerance of ONNX Runtime's on the
CPU (the backend the export held against PyTorch), on the timing inputs.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ser.audio import SAMPLE_RATE
from ser.bundle import Bundle
from ser.data.signals import synthetic_voice
from ser.runtime.cpu import cpu_features
from ser.runtime.tuning import CPU_BACKENDS, record_path
from ser.staging import write_atomic

REFERENCE_BACKEND = "onnxruntime-cpu"  # what export validated against PyTorch


@dataclass(frozen=True)
class Measurement:
    backend: str
    verified: bool
    why: str | None  # why not verified, or why not measured
    median_ms: dict[str, float]  # "<batch>x<seconds>s" → median latency of one call

    @property
    def total_ms(self) -> float:
        return sum(self.median_ms.values()) if self.median_ms else float("inf")


@dataclass(frozen=True)
class Tuning:
    """What `tune` measured on one kind of CPU, and the backend `auto` takes there (None: none verified)."""

    cpu: dict[str, Any]
    threads: int | None
    measurements: tuple[Measurement, ...]
    choice: str | None
    date: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        lines = []
        for m in self.measurements:
            timing = ", ".join(f"{case} {ms:.1f} ms" for case, ms in m.median_ms.items())
            state = "verified" if m.verified else f"not verified: {m.why}"
            lines.append(f"{m.backend}: {timing or 'not measured'} ({state})")
        lines.append(f"auto on this CPU: {self.choice or 'no verified CPU backend'}")
        return "\n".join(lines)


def tune(
    bundle: Bundle,
    batches: tuple[int, ...] = (1, 4),
    seconds: float = 4.0,
    threads: int | None = None,
    runs: int = 7,
    write: bool = True,
) -> Tuning:
    """Time each CPU backend installed here on `batches` × `seconds` of speech-like audio (median of `runs`
    calls after two warm-up calls), check it is verified for `bundle`, and record the fastest verified one."""
    from ser.runtime.recognizer import backend_problem, int8_problem, open_backend

    n = round(seconds * SAMPLE_RATE)
    cases = {f"{b}x{seconds:g}s": np.stack([synthetic_voice(n, seed=row) for row in range(b)]) for b in batches}
    quantization = bundle.manifest.quantization
    tolerance = bundle.manifest.validation.get("tolerance")
    reference: dict[str, np.ndarray] = {}
    measurements = []
    for name in CPU_BACKENDS:
        problem = backend_problem(name)
        if problem is not None:
            measurements.append(Measurement(name, False, problem, {}))
            continue
        why = int8_problem(quantization, name)
        timings: dict[str, float] = {}
        with open_backend(bundle, name, threads) as backend:
            for case, audio in cases.items():
                feeds = {"audio": audio, "lengths": np.full(len(audio), n, dtype=np.int64)}
                # Warm-up: by the second call openvino-cpu runs this repeated shape on its own compile, so
                # the answers checked here are those of the compile timed below.
                logits = [backend.infer(feeds)["logits"] for _ in range(2)][-1]
                if name == REFERENCE_BACKEND:
                    reference[case] = logits
                elif not quantization and tolerance is not None and why is None:
                    error = float(np.abs(logits - reference[case]).max())
                    if error > tolerance:
                        why = f"answers {error:.3g} from ONNX Runtime's, over the bundle's tolerance {tolerance:g}"
                calls = []
                for _ in range(runs):
                    started = time.perf_counter()
                    backend.infer(feeds)
                    calls.append(time.perf_counter() - started)
                timings[case] = round(statistics.median(calls) * 1000, 3)
        measurements.append(Measurement(name, why is None, why, timings))
    verified = [m for m in measurements if m.verified]
    choice = min(verified, key=lambda m: m.total_ms).backend if verified else None
    result = Tuning(cpu_features().to_dict(), threads, tuple(measurements), choice, time.strftime("%Y-%m-%d %H:%M:%S"))
    if write:
        path = record_path(bundle)
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
