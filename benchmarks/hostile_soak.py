"""Hostile-input soak of ser-serve on loopback: every kind of bad input at once, against one real process.

    python benchmarks/hostile_soak.py BUNDLE [--rounds 20] [--seconds 120] [--out benchmarks/results/hostile_soak.json]

Starts `ser-serve BUNDLE` (1 thread, short connection deadlines), then runs `--rounds` rounds, each
sending every attack below from its own thread, with good requests in between, while a prober asks
/healthz every 50 ms and a sampler reads the server's RSS every 200 ms. Bounded in count and in
time (`--seconds`); loopback only. Reports per attack the statuses it got, whether any answer was a
5xx or carried NaN, the longest /healthz stall, the peak and final RSS, and whether the service was
still up at the end.

Attacks (the hostile-input issue's list): a WAV claiming 1 Hz; a FLAC claiming 2^36 samples; float
samples near ±3.4e38 (predict and timeline); 79,201 timeline windows, a 0.00001 s hop, NaN
parameters; 20 idle connections that never send a byte; a body sent at 1 byte/s; a request head of
64 KiB; a client that disconnects mid-body; a malformed multipart body; an Open Inference Protocol
tensor whose shape claims 2^64 elements (numpy's 64-bit product wraps that to 0) in 0 bytes; and, as
ser-serve's protocol reads the infer route's bodies itself, its own: a body at 1 byte/s, a disconnect
mid-body, a head claiming a 1 TiB body, and a chunked body that runs past the upload limit.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' own hostile inputs
from serve_load import rss_mib, start_serve
from tests.hostile import flac_claiming_frames, float_wav, wav_claiming_rate

from ser.audio import SAMPLE_RATE
from ser.bench.environment import cpu_info
from ser.bundle import Bundle
from ser.data.signals import synthetic_voice

WAV = {"content-type": "audio/wav"}


def wav_bytes(seconds: float, seed: int = 0) -> bytes:
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, synthetic_voice(int(seconds * SAMPLE_RATE), seed), SAMPLE_RATE, format="WAV")
    return buffer.getvalue()


def raw_exchange(port: int, payload: bytes, trickle: float = 0.0, close_after: float | None = None) -> str:
    """Send `payload` on a fresh connection (a byte every `trickle` s if set), then read until the server
    closes it; `close_after`: hang up after that many seconds without reading. Returns the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        started = time.monotonic()
        try:
            if trickle:
                for byte in payload:
                    conn.sendall(bytes([byte]))
                    time.sleep(trickle)
            else:
                conn.sendall(payload)
            if close_after is not None:
                time.sleep(close_after)
                return "hung up"
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        except OSError as e:  # the server closed the connection while we wrote
            return f"closed by server after {time.monotonic() - started:.1f} s ({type(e).__name__})"
    line = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    return line or f"closed by server after {time.monotonic() - started:.1f} s"


def attacks(url: str, port: int, good: bytes, model: str) -> dict:
    """name → a function doing that attack once and returning what it got (a status or a description)."""
    huge = json.dumps({"inputs": [{"name": "AUDIO", "shape": [2**32, 2**32], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 0}}]}).encode()  # fmt: skip
    ten_seconds = wav_bytes(10.0, seed=1)
    head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: {len(good)}\r\n\r\n"
    padded_head = head.encode()[:-2] + b"X-Pad: " + b"a" * (64 << 10) + b"\r\n\r\n"
    # The infer route's body is gathered by ser-serve's protocol itself (ser.serve.protocol): its own attacks.
    infer = f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
    infer_head = f"{infer}Content-Length: {len(good)}\r\n\r\n".encode()

    def post(path: str, content: bytes, params: dict | None = None, headers: dict | None = None) -> str:
        response = httpx.post(url + path, content=content, params=params, headers=headers or WAV, timeout=60)
        nan = (
            response.status_code == 200
            and path.startswith("/v1")
            and not all(isinstance(v, float) and math.isfinite(v) for v in response.json()["scores"].values())
        )
        return f"{response.status_code}{' NaN' if nan else ''}"

    def idle() -> str:
        connections = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(20)]
        closed = [c.recv(1) == b"" for c in connections]  # blocks until the server closes each
        for c in connections:
            c.close()
        return f"{sum(closed)}/20 closed by server"

    boundary = "soak"
    multipart = f"--{boundary}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{boundary}--\r\n".encode()
    return {
        "wav claiming 1 Hz": lambda: post("/v1/predict", wav_claiming_rate(1)),
        "flac claiming 2^36 samples": lambda: post("/v1/predict", flac_claiming_frames((1 << 36) - 1)),
        "float near 3.4e38 (predict)": lambda: post("/v1/predict", float_wav(3.4e38)),
        "float near 3.4e38 (timeline)": lambda: post("/v1/timeline", float_wav(3.4e38, seconds=3.0)),
        "79,201 windows": lambda: post("/v1/timeline", ten_seconds, {"window_s": 0.1, "hop_s": 0.0001}),
        "hop 0.00001 s": lambda: post("/v1/timeline", ten_seconds, {"window_s": 0.1, "hop_s": 0.00001}),
        "NaN window": lambda: post("/v1/timeline", ten_seconds, {"window_s": "nan"}),
        "infer tensor of 2^64 elements in 0 bytes": lambda: post(
            f"/v2/models/{model}/infer", huge, headers={"inference-header-content-length": str(len(huge))}
        ),
        "malformed multipart": lambda: post(
            "/v1/predict", multipart, headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        ),
        "20 idle connections": idle,
        "body at 1 byte/s": lambda: raw_exchange(port, head.encode() + good[:12], trickle=1.0),
        "64 KiB of headers": lambda: raw_exchange(port, padded_head),
        "disconnect mid-body": lambda: raw_exchange(port, head.encode() + good[:100], close_after=0.2),
        "infer body at 1 byte/s": lambda: raw_exchange(port, infer_head + good[:12], trickle=1.0),
        "infer disconnect mid-body": lambda: raw_exchange(port, infer_head + good[:100], close_after=0.2),
        "infer claiming a 1 TiB body": lambda: raw_exchange(port, f"{infer}Content-Length: {1 << 40}\r\n\r\n".encode()),
        "infer chunked past the limit": lambda: raw_exchange(
            port,
            f"{infer}Transfer-Encoding: chunked\r\n\r\n".encode() + (b"100000\r\n" + b"\0" * (1 << 20) + b"\r\n") * 30,
        ),
        "good request": lambda: post("/v1/predict", good),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=120.0, help="stop starting rounds after this long")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/hostile_soak.json"))
    args = parser.parse_args()

    log = open(Path(tempfile.gettempdir()) / "ser-hostile-soak.log", "w")  # noqa: SIM115 - closed at the end
    options = ["--threads", "1", "--keep-alive-s", "2", "--body-timeout-s", "3", "--log-level", "warning"]
    server, url = start_serve(args.bundle, *options, log=log)
    port = int(url.rsplit(":", 1)[1])
    stop = threading.Event()
    stalls: list[float] = []
    rss: list[float] = [rss_mib(server.pid)]

    def probe() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    client.get(f"{url}/healthz")
                    stalls.append(time.perf_counter() - started)
                except httpx.HTTPError:
                    stalls.append(math.inf)
                time.sleep(0.05)

    def sample() -> None:
        while not stop.is_set() and server.poll() is None:
            rss.append(rss_mib(server.pid))
            time.sleep(0.2)

    good = wav_bytes(1.0)
    kinds = attacks(url, port, good, Bundle.load(args.bundle).manifest.model.name)
    results: dict[str, Counter] = {name: Counter() for name in kinds}
    helpers = [threading.Thread(target=f, daemon=True) for f in (probe, sample)]
    for t in helpers:
        t.start()
    started, rounds = time.monotonic(), 0
    while rounds < args.rounds and time.monotonic() - started < args.seconds:
        threads = []
        for name, attack in kinds.items():

            def run(name=name, attack=attack) -> None:
                try:
                    results[name][attack()] += 1
                except Exception as e:  # the attacker's own failure is a result too
                    results[name][f"client error {type(e).__name__}"] += 1

            threads.append(threading.Thread(target=run, daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        rounds += 1
    elapsed = time.monotonic() - started
    alive = httpx.get(f"{url}/healthz").status_code == 200 and server.poll() is None
    stop.set()
    for t in helpers:
        t.join(timeout=5)
    server.terminate()
    server.wait(timeout=30)
    log.close()

    report = {
        "machine": cpu_info(),
        "bundle": str(args.bundle),
        "rounds": rounds,
        "seconds": round(elapsed, 1),
        "results": {name: dict(counter) for name, counter in results.items()},
        "server_errors": sum(n for c in results.values() for status, n in c.items() if status.startswith("5")),
        "nan_answers": sum(n for c in results.values() for status, n in c.items() if "NaN" in status),
        "healthz_probes": len(stalls),
        "healthz_longest_s": round(max(stalls), 3),
        "healthz_p99_s": round(sorted(stalls)[int(0.99 * (len(stalls) - 1))], 3),
        "rss_mib": {"start": round(rss[0], 1), "peak": round(max(rss), 1), "end": round(rss[-1], 1)},
        "alive_at_end": alive,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
