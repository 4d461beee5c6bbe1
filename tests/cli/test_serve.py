"""ser-serve as users start it: the console script, a loopback port, real requests, a clean stop."""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SCRIPTS = Path(sys.executable).parent
WAV = {"content-type": "audio/wav"}


def _start(*args) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [SCRIPTS / "ser-serve", *map(str, args), "--port", str(port), "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    return process, url


def _stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=30)[0]


def test_serves_a_bundle_and_stops_on_sigterm(tiny_bundle, write_clip):
    process, url = _start(tiny_bundle("resnet18"), "--max-batch", "4")
    try:
        response = httpx.post(f"{url}/v1/predict", content=write_clip("a.wav").read_bytes(), headers=WAV)
    finally:
        output = _stop(process)
    assert response.status_code == 200, response.text
    assert set(response.json()["scores"]) == {"angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised"}
    # uvicorn finishes the shutdown, then re-raises the signal it caught, as a process manager expects.
    assert process.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output
    assert url.removeprefix("http://") in output  # bound to loopback by default


def test_worker_processes_share_one_metrics_view(tiny_bundle, write_clip):
    process, url = _start(tiny_bundle("resnet18"), "--workers", "2")
    try:
        clip = write_clip("a.wav", seconds=0.5).read_bytes()
        statuses = [httpx.post(f"{url}/v1/predict", content=clip, headers=WAV).status_code for _ in range(6)]
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        _stop(process)
    assert statuses == [200] * 6
    assert 'ser_requests_total{endpoint="/v1/predict",status="200"} 6.0' in metrics


def test_a_broken_bundle_is_refused_before_binding(tmp_path):
    result = subprocess.run([SCRIPTS / "ser-serve", tmp_path], capture_output=True, text=True)
    assert result.returncode == 2 and "manifest" in result.stderr
