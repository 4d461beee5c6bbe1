"""Load test of ser-serve on loopback: N concurrent clients for a fixed time, once per --max-batch setting.

    python benchmarks/serve_load.py BUNDLE [--clients 64] [--seconds 60] [--max-batch 16 --max-batch 1]

Each setting starts its own `ser-serve` process, warms it up, then wrk (one thread, one connection
per client) posts the same clip on every connection in a loop, a new request as soon as the answer
arrives, until the time or the request budget is spent. Reports throughput, latency percentiles,
errors, the server's batch-size histogram (from /metrics) and its resident memory at the start and
the end. Loopback only; wrk shares the machine with the server. wrk rather than a Python client: on
two cores a Python client (httpx, 64 tasks) became the bottleneck and halved what the service
appeared to do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx
import soundfile as sf

from ser.audio import SAMPLE_RATE
from ser.data.signals import synthetic_voice

SCRIPTS = Path(sys.executable).parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def batch_histogram(metrics: str) -> dict[str, int]:
    """Batches per size bucket ("1", "2", "3-4", ...) from the cumulative Prometheus histogram."""
    buckets = re.findall(r'^ser_batch_size_bucket\{le="([^"]+)"\} (\S+)$', metrics, flags=re.MULTILINE)
    cumulative = [(float(le), float(n)) for le, n in buckets if le != "+Inf"]
    histogram, previous_le, previous_n = {}, 0.0, 0.0
    for le, n in cumulative:
        if n > previous_n:
            low = int(previous_le) + 1
            histogram[str(int(le)) if low == int(le) else f"{low}-{int(le)}"] = int(n - previous_n)
        previous_le, previous_n = le, n
    return histogram


WRK_SCRIPT = """
local f = io.open("%(clip)s", "rb")
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
%(headers)s
local answered = 0
response = function(status, headers, body)
  answered = answered + 1
  if answered >= %(max_requests)d then wrk.thread:stop() end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"non_2xx\\": %%d, \\"socket_errors\\": %%d, " ..
    "\\"p50_us\\": %%d, \\"p90_us\\": %%d, \\"p99_us\\": %%d, \\"mean_us\\": %%f}\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def load(
    url: str,
    clip: Path,
    clients: int,
    seconds: float,
    max_requests: int,
    workdir: Path,
    path: str = "/v1/predict",
    headers: dict[str, str] | None = None,
) -> dict:
    """Drive the service with wrk: `clients` connections, each posting the file `clip` to `path` as soon as
    its answer arrives."""
    script = workdir / "post.lua"
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {"Content-Type": "audio/wav"}).items())
    script.write_text(WRK_SCRIPT % {"clip": clip, "max_requests": max_requests, "headers": lines})
    command = [
        "wrk",
        "-t1",
        f"-c{clients}",
        f"-d{seconds:g}s",
        "--timeout",
        "60s",
        "-s",
        str(script),
        f"{url}{path}",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    raw = json.loads(line.removeprefix("RESULT "))
    elapsed = raw["duration_us"] / 1e6
    errors = raw["non_2xx"] + raw["socket_errors"]
    return {
        "requests": raw["requests"],
        "errors": errors,
        "elapsed_s": elapsed,
        "throughput_rps": (raw["requests"] - errors) / elapsed,
        "latency_ms": {k: raw[f"{k}_us"] / 1000 for k in ("p50", "p90", "p99", "mean")},
    }


def start_serve(bundle: Path, *options: str, log: IO | None = None) -> tuple[subprocess.Popen, str]:
    """`ser-serve BUNDLE OPTIONS` on a free loopback port, once it reports ready: (process, base URL).
    Its output goes to `log` (default: discarded; its errors are raised if it does not start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(SCRIPTS / "ser-serve"), str(bundle), "--port", str(port), *options]
    stderr = subprocess.STDOUT if log is not None else subprocess.PIPE
    server = subprocess.Popen(command, stdout=log or subprocess.DEVNULL, stderr=stderr, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"ser-serve did not start: {server.stderr.read() if server.stderr else ''}")
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.2)


def run_setting(bundle: Path, max_batch: int, args: argparse.Namespace, clip: Path) -> dict:
    options = ["--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms), "--log-level", "warning"]
    if args.threads:
        options += ["--threads", str(args.threads)]
    server, url = start_serve(bundle, *options)
    try:
        load(url, clip, args.clients, 5.0, 10**9, clip.parent)  # warm-up, not counted
        rss_start = rss_mib(server.pid)
        warmup_batches = batch_histogram(httpx.get(f"{url}/metrics").text)
        result = load(url, clip, args.clients, args.seconds, args.max_requests, clip.parent)
        rss_end = rss_mib(server.pid)
        histogram = batch_histogram(httpx.get(f"{url}/metrics").text)
        histogram = {k: v - warmup_batches.get(k, 0) for k, v in histogram.items() if v - warmup_batches.get(k, 0)}
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "max_batch": max_batch,
        **result,
        "audio_seconds_per_second": result["throughput_rps"] * args.clip_seconds,
        "batch_histogram": histogram,
        "rss_mib": {"start": rss_start, "end": rss_end, "growth_pct": 100 * (rss_end - rss_start) / rss_start},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=200_000, help="Upper bound on requests per setting.")
    parser.add_argument("--max-batch", type=int, action="append", help="Settings to compare (default: 16 and 1).")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        sys.exit("serve_load: needs wrk, the HTTP load generator (Debian/Ubuntu: apt-get install wrk)")
    with tempfile.TemporaryDirectory() as workdir:
        clip = Path(workdir) / "clip.wav"
        sf.write(clip, synthetic_voice(int(args.clip_seconds * SAMPLE_RATE), seed=0), SAMPLE_RATE)
        runs = [run_setting(args.bundle, b, args, clip) for b in (args.max_batch or [16, 1])]
    report = {
        "bundle": str(args.bundle),
        "clients": args.clients,
        "seconds": args.seconds,
        "clip_seconds": args.clip_seconds,
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "runs": runs,
    }
    print(
        "| --max-batch | requests | errors | throughput (req/s) | audio s/s | p50 ms | p99 ms | batch sizes "
        "| RSS start → end MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for r in runs:
        lat, rss = r["latency_ms"], r["rss_mib"]
        sizes = ", ".join(f"{k}: {v}" for k, v in r["batch_histogram"].items())
        print(f"| {r['max_batch']} | {r['requests']} | {r['errors']} | {r['throughput_rps']:.1f} | "
              f"{r['audio_seconds_per_second']:.1f} | {lat['p50']:.0f} | {lat['p99']:.0f} | {sizes} | "
              f"{rss['start']:.0f} → {rss['end']:.0f} ({rss['growth_pct']:+.1f}%) |")  # fmt: skip
    if len(runs) > 1:
        print(f"\nthroughput of --max-batch {runs[0]['max_batch']} over {runs[-1]['max_batch']}: "
              f"{runs[0]['throughput_rps'] / runs[-1]['throughput_rps']:.2f}x")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
