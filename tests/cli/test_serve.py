"""ser-serve as users start it: the console script, a loopback port, real requests, a clean stop."""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SCRIPTS = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serves_a_bundle_and_stops_on_sigterm(tiny_bundle, write_clip):
    port = _free_port()
    process = subprocess.Popen(
        [SCRIPTS / "ser-serve", tiny_bundle("resnet18"), "--port", str(port), "--max-batch", "4", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        clip = write_clip("a.wav", seconds=1.0).read_bytes()
        response = httpx.post(f"{url}/v1/predict", content=clip, headers={"content-type": "audio/wav"})
        assert response.status_code == 200, response.text
        assert set(response.json()["scores"]) == {
            "angry",
            "disgusted",
            "fearful",
            "happy",
            "neutral",
            "sad",
            "surprised",
        }
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    # uvicorn finishes the shutdown, then re-raises the signal it caught, as a process manager expects.
    assert process.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output
    assert f"127.0.0.1:{port}" in output  # bound to loopback by default


def test_a_broken_bundle_is_refused_before_binding(tmp_path):
    result = subprocess.run([SCRIPTS / "ser-serve", tmp_path], capture_output=True, text=True)
    assert result.returncode == 2 and "manifest" in result.stderr
