"""One benchmarked configuration in a process of its own: `python -m ser.bench.worker`.

Each configuration runs in its own process so that its memory is its own (peak RSS, GPU memory),
its thread pools cannot linger into another's timings, and an ONNX Runtime worker never imports
torch (what an embedding service would load). The parent sends one JSON object per line on stdin
and reads one reply per line; the worker times the calls itself, so pipes never enter a latency.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ser.audio import SAMPLE_RATE, load_audio
from ser.data.signals import synthetic_voice
from ser.runtime.base import Backend

# ONNX Runtime's pool threads spin for a while after a run; on a machine with few cores, a session
# that ran just before would steal time from the next one. A pause before each timed call lets them idle.
SETTLE_S = 0.05


def load_backend(spec: dict[str, Any]) -> tuple[Backend, tuple[str, ...], str, int]:
    """The configuration's Backend (not yet active), its output names in order, what they are (ser.answer's
    kind: categories or dimensions) and its model's size in bytes."""
    if spec["backend"].startswith("pytorch"):
        import torch

        from ser.models import load_model
        from ser.models.reference import TorchBackend

        torch.set_num_threads(spec["threads"])
        loaded = load_model(spec["model"], spec["checkpoint"], spec["size"], random_init=spec["checkpoint"] is None)
        size = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        backend = TorchBackend(
            loaded.waveform(),
            len(loaded.labels),
            device=spec["device"],
            precision=spec["precision"],
            compile=spec["backend"] == "pytorch-compile",
        )
        return backend, loaded.labels, loaded.answer.kind, size
    if spec["backend"] == "openvino":
        from ser.bench.peers import OpenVinoBackend

        peer = OpenVinoBackend(spec["bundle"], threads=spec["threads"])
        return peer, peer.labels, peer.answer, peer.bytes
    from ser.bundle import Bundle
    from ser.runtime.recognizer import open_backend

    bundle = Bundle.load(spec["bundle"])
    backend = open_backend(bundle, spec["backend"], threads=spec["threads"])  # the runtime's own names
    if spec["backend"] == "tensorrt":
        size = sum((bundle.path / engine["file"]).stat().st_size for engine in bundle.manifest.engines)
    else:
        data = bundle.onnx_path.with_name(bundle.onnx_path.name + ".data")  # weights over 1 GiB live beside it
        size = bundle.onnx_path.stat().st_size + (data.stat().st_size if data.exists() else 0)
    return backend, bundle.manifest.labels, bundle.manifest.answer["kind"], size


def synthetic_feeds(batch: int, seconds: float) -> dict[str, np.ndarray]:
    """The same `batch` × `seconds` input for every configuration: speech-like, one seed per row."""
    n = round(seconds * SAMPLE_RATE)
    audio = np.stack([synthetic_voice(n, seed=row) for row in range(batch)])
    return {"audio": audio, "lengths": np.full(batch, n, dtype=np.int64)}


def peak_rss_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM, not getrusage: ru_maxrss survives fork and exec,
    so a worker would report its parent's peak whenever that was larger."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def gpu_memory_mib(pid: int) -> float | None:
    """GPU memory held by process `pid` (CUDA context included), from nvidia-smi; None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
    try:
        lines = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
    except (subprocess.SubprocessError, OSError):
        return None
    used = [float(mib) for line in lines for p, mib in [line.split(",")] if int(p) == pid]
    return sum(used) if used else 0.0


class Session:
    """The worker's state between commands: the active backend and the inputs built so far."""

    def __init__(self, spec: dict[str, Any]):
        start = time.perf_counter()
        self.backend, self.labels, self.answer, self.bytes = load_backend(spec)
        self.backend.activate()
        self.load_s = time.perf_counter() - start
        batch, seconds = spec["cold_case"]
        start = time.perf_counter()
        self.backend.infer(synthetic_feeds(batch, seconds))
        self.first_s = time.perf_counter() - start
        self._feeds: dict[tuple[int, float], dict[str, np.ndarray]] = {}

    def feeds(self, batch: int, seconds: float) -> dict[str, np.ndarray]:
        if (batch, seconds) not in self._feeds:
            self._feeds = {(batch, seconds): synthetic_feeds(batch, seconds)}  # one case at a time
        return self._feeds[batch, seconds]

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        command = message["cmd"]
        if command == "warmup":
            feeds = self.feeds(message["batch"], message["seconds"])
            for _ in range(message["runs"]):
                self.backend.infer(feeds)
            return {}
        if command == "time":
            feeds = self.feeds(message["batch"], message["seconds"])
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            self.backend.infer(feeds)
            return {"s": time.perf_counter() - start}
        if command == "logits":  # each clip alone, as the reference runs them (any rate: resampled to 16 kHz)
            return {"logits": self.backend.logits_each([load_audio(path) for path in message["clips"]]).tolist()}
        if command == "memory":
            return {
                "peak_rss_mib": peak_rss_mib(),
                "gpu_mib": gpu_memory_mib(os.getpid()),
                "torch_imported": "torch" in sys.modules,  # an ONNX Runtime worker must not pay for torch
            }
        raise ValueError(f"unknown command {command!r}")


def main() -> None:
    # Replies go on a private copy of stdout; anything a library prints goes to stderr (the log).
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def reply(**fields: Any) -> None:
        replies.write(json.dumps(fields) + "\n")

    try:
        spec = json.loads(sys.stdin.readline())
        session = Session(spec)
    except Exception as error:  # reported to the parent, which marks the configuration failed
        reply(error=f"{type(error).__name__}: {error}")
        return
    reply(load_s=session.load_s, first_s=session.first_s, labels=list(session.labels), answer=session.answer,
          bytes=session.bytes)  # fmt: skip
    for line in sys.stdin:
        message = json.loads(line)
        if message["cmd"] == "exit":
            break
        try:
            reply(**session.handle(message))
        except Exception as error:
            reply(error=f"{type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
