"""The CPU backend `auto` takes for a bundle on this kind of CPU, as `ser tune` measured and recorded it.

Which engine is faster depends on the CPU (OpenVINO led ONNX Runtime on an AVX-512 VNNI EPYC and trailed
it on an AVX2-only one), so `auto` follows a measurement, never a fixed order: `ser tune`
(`ser.bench.tune`) times every verified CPU backend and writes the fastest to `tuning/<cpu key>.json`
inside the bundle folder (a runtime cache, like ONNX Runtime's TensorRT engines: outside the hashed
contract). A bundle copied to another kind of CPU carries the record but does not use it there.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ser.bundle import TUNING_DIR, Bundle
from ser.runtime.cpu import CpuFeatures, cpu_features

CPU_BACKENDS = ("onnxruntime-cpu", "openvino-cpu")  # what `ser tune` measures and `auto` may take from a record


def cpu_key(cpu: CpuFeatures) -> str:
    """A name for this kind of CPU: its model and every flag (kernels key on more than the INT8 ones)."""
    return hashlib.sha256(f"{cpu.model}\n{' '.join(sorted(cpu.flags))}".encode()).hexdigest()[:16]


def record_path(bundle: Bundle, cpu: CpuFeatures | None = None) -> Path:
    return bundle.path / TUNING_DIR / f"{cpu_key(cpu or cpu_features())}.json"


def recorded_choice(bundle: Bundle) -> str | None:
    """The backend `tune` chose for this kind of CPU, or None where it has not run here (or its record is unreadable,
    which only costs the choice: auto falls back to its default)."""
    path = record_path(bundle)
    try:
        choice = json.loads(path.read_text()).get("choice")
    except (OSError, ValueError, AttributeError):
        return None
    return choice if choice in CPU_BACKENDS else None
