"""A real Triton Inference Server on loopback: the `tritonserver` binary and Python backend that the
nvidia-pytriton wheel ships (`make test` installs it). Shared by the tests and benchmarks/triton_vs_serve.py."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The Python environment Triton's Python-backend stub runs ser in: `make test` creates it with ser's runtime
# and NumPy 1 (the stub in Triton 2.51 is built against NumPy 1's ABI; under NumPy 2 it garbles BYTES inputs).
STUB_PYTHON = Path(os.environ.get("SER_TRITON_PYTHON", Path(__file__).parents[1] / ".venv-triton" / "bin" / "python"))


def unavailable_reason() -> str | None:
    """Why no Triton server can run here, or None."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        here = f"{platform.system()} {platform.machine()}"
        return f"the nvidia-pytriton wheel ships tritonserver for Linux x86-64 only, not {here}"
    libc, version = platform.libc_ver()
    if libc == "glibc" and tuple(map(int, version.split(".")[:2])) < (2, 35):
        return f"tritonserver from nvidia-pytriton needs glibc 2.35 or newer, this is {version}"
    if importlib.util.find_spec("pytriton") is None:
        return "nvidia-pytriton is not installed (make test installs it: pip install --no-deps nvidia-pytriton)"
    if not STUB_PYTHON.is_file():
        return f"no Python environment for Triton's stub at {STUB_PYTHON} (make test creates .venv-triton)"
    return None


@dataclass
class TritonServer:
    process: subprocess.Popen
    http_port: int
    grpc_port: int
    log: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_triton(repository: Path, work: Path, python: Path = STUB_PYTHON, timeout_s: float = 120) -> TritonServer:
    """tritonserver over `repository`, its Python backend running the environment of `python` (as PyTriton
    sets one up: the stub for that Python's version, its bin folder first on PATH, its libpython on the
    loader path)."""
    package = Path(importlib.util.find_spec("pytriton").submodule_search_locations[0])  # type: ignore[union-attr]
    dist = package / "tritonserver"
    libs = package.parent / "nvidia_pytriton.libs"
    backends = work / "backends"
    shutil.copytree(dist / "backends", backends, dirs_exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy2(dist / "python_backend_stubs" / version / "triton_python_backend_stub", backends / "python")
    http_port, grpc_port, metrics_port = _free_port(), _free_port(), _free_port()
    env = dict(os.environ)
    env["PATH"] = f"{python.parent}:{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = ":".join(
        p for p in (sysconfig.get_config_var("LIBDIR"), str(libs), env.get("LD_LIBRARY_PATH")) if p
    )
    command = [
        dist / "bin" / "tritonserver",
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1",
        f"--http-port={http_port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics_port}",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=10",
    ]
    log = work / "tritonserver.log"
    process = subprocess.Popen(list(map(str, command)), stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    server = TritonServer(process, http_port, grpc_port, log)
    deadline = time.monotonic() + timeout_s
    import httpx

    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://{server.http_url}/v2/health/ready", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"tritonserver did not become ready; its log ({log}):\n{log.read_text()[-4000:]}")
