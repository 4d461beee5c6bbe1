"""The same bundle and the same load against ser-serve and against Triton's Python backend, side by side.

    python benchmarks/triton_vs_serve.py BUNDLE [--clients 64] [--seconds 30] [--instances 1 --instances 2]
                                                [--repeats 1] [--out FILE.json]

Both servers speak the Open Inference Protocol, so wrk (one thread, `--clients` connections, each posting
the next request when its answer arrives) sends both the identical request: POST /v2/models/<name>/infer
with a 2 s WAV as AUDIO_FILE in the binary tensor extension. ser-serve runs with `--max-batch 16
--max-wait-ms 5`; Triton gets `ser-export --triton-backend python --triton-max-batch 16` (dynamic
batching, 5 ms queue delay, CPU instances), from the tritonserver and Python backend of the
nvidia-pytriton wheel, its stub in .venv-triton (as `make test` builds it). Both run each `--instances`
count: one model instance on ONNX Runtime's default threads, or N instances sharing the cores (one
thread each on two cores), ser-serve's `--instances N` against Triton's instance group of N. Each
server gets a 5 s warm-up, then the measured run. `--repeats R` measures every pair R times, the
servers' order reversed every other time (a shared VM drifts by tens of percent over minutes), and
reports each pair's median. Reports throughput, latency p50/p90/p99, errors, RSS and CPU time per
answered request (Triton: the server and its stub processes; wrk's own CPU is not counted). Loopback only;
wrk shares the cores with the server.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' Triton launcher
from serve_load import load, rss_mib, start_serve
from tests.triton_server import start_triton, unavailable_reason

from ser.audio import SAMPLE_RATE
from ser.bench.environment import cpu_info
from ser.bundle import Bundle
from ser.data.signals import synthetic_voice
from ser.export.triton import TritonOptions, write_triton_repository
from ser.serve.app import shared_threads

HEADERS = {"Content-Type": "application/octet-stream"}
TICKS = os.sysconf("SC_CLK_TCK")


def infer_body(wav: bytes) -> tuple[bytes, int]:
    """An OIP infer request with one AUDIO_FILE in the binary tensor extension: (body, JSON header length)."""
    element = struct.pack("<I", len(wav)) + wav
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "AUDIO_FILE",
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(element)},
                }
            ]
        }
    ).encode()
    return header + element, len(header)


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (Triton's Python stubs are child processes)."""
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def tree_rss_mib(pid: int) -> float:
    return sum(rss_mib(p) for p in process_tree(pid))


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and its children, every thread."""
    total = 0.0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def measure(url: str, pid: int, path: str, body: Path, header_length: int, args, work: Path) -> dict:
    headers = {**HEADERS, "Inference-Header-Content-Length": str(header_length)}
    load(url, body, args.clients, 5.0, 10**9, work, path, headers)  # warm-up, not counted
    rss_start, cpu_start = tree_rss_mib(pid), tree_cpu_s(pid)
    result = load(url, body, args.clients, args.seconds, args.max_requests, work, path, headers)
    rss_end, cpu_s = tree_rss_mib(pid), tree_cpu_s(pid) - cpu_start
    return {
        **result,
        "rss_mib": {"start": round(rss_start, 1), "end": round(rss_end, 1)},
        "cpu_ms_per_request": round(1000 * cpu_s / max(result["requests"], 1), 3),
    }


def run_serve(bundle: Path, instances: int, path: str, body: Path, header_length: int, args, work: Path) -> dict:
    options = ["--max-batch", "16", "--max-wait-ms", "5", "--log-level", "warning", "--max-connections", "1024"]
    if instances > 1:
        options += ["--instances", str(instances), "--threads", str(shared_threads(instances))]
    server, url = start_serve(bundle, *options)
    try:
        return measure(url, server.pid, path, body, header_length, args, work)
    finally:
        server.terminate()
        server.wait(timeout=30)


def run_triton(bundle: Path, instances: int, path: str, body: Path, header_length: int, args, work: Path) -> dict:
    repository = work / "models"
    options = TritonOptions(backend="python", max_batch=16, instances=instances, threads=shared_threads(instances))
    write_triton_repository(Bundle.load(bundle), repository, options)
    server = start_triton(repository, work)
    try:
        return measure(f"http://{server.http_url}", server.process.pid, path, body, header_length, args, work)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--instances", type=int, action="append", help="model instances per server (repeat)")
    parser.add_argument("--repeats", type=int, default=1, help="measurements of each pair (median reported)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("triton_vs_serve: needs wrk (Debian/Ubuntu: apt-get install wrk)")
    if (reason := unavailable_reason()) is not None:
        sys.exit(f"triton_vs_serve: {reason}")
    name = Bundle.load(args.bundle).manifest.model.name
    path = f"/v2/models/{name}/infer"
    buffer = io.BytesIO()
    sf.write(buffer, synthetic_voice(int(args.clip_seconds * SAMPLE_RATE), seed=0), SAMPLE_RATE, format="WAV")
    data, header_length = infer_body(buffer.getvalue())
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        body = work / "infer.bin"
        body.write_bytes(data)
        servers = [("ser-serve", run_serve), ("triton-python", run_triton)]
        for repeat in range(args.repeats):
            for instances in args.instances or [1, 2]:
                for server, run in servers if repeat % 2 == 0 else servers[::-1]:
                    key = f"{server} ×{instances}"
                    folder = work / f"{server}-{instances}-{repeat}"
                    folder.mkdir()
                    entry = runs.setdefault(key, {"instances": instances, "repeats": [],
                                                  "threads_per_instance": shared_threads(instances)})  # fmt: skip
                    entry["repeats"].append(run(args.bundle, instances, path, body, header_length, args, folder))
    for entry in runs.values():
        entry["median"] = {
            "throughput_rps": statistics.median(r["throughput_rps"] for r in entry["repeats"]),
            **{p: statistics.median(r["latency_ms"][p] for r in entry["repeats"]) for p in ("p50", "p90", "p99")},
            "errors": sum(r["errors"] for r in entry["repeats"]),
            "cpu_ms_per_request": statistics.median(r["cpu_ms_per_request"] for r in entry["repeats"]),
        }
    report = {
        "bundle": str(args.bundle),
        "clients": args.clients,
        "seconds": args.seconds,
        "clip_seconds": args.clip_seconds,
        "repeats": args.repeats,
        "machine": cpu_info(),
        "runs": runs,
    }
    print("| server × instances | errors | req/s (median; each run) | p50 ms | p90 ms | p99 ms (median; each run) "
          "| CPU ms / request |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for server, entry in runs.items():
        m, each = entry["median"], entry["repeats"]
        rps = ", ".join(f"{r['throughput_rps']:.0f}" for r in each)
        p99 = ", ".join(f"{r['latency_ms']['p99']:.0f}" for r in each)
        print(f"| {server} | {m['errors']} | {m['throughput_rps']:.1f} ({rps}) | {m['p50']:.0f} | {m['p90']:.0f} | "
              f"{m['p99']:.0f} ({p99}) | {m['cpu_ms_per_request']:.2f} |")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
