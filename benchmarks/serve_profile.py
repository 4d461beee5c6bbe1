"""Where ser-serve's CPU goes under load: CPU time per request of each of its threads (and of its model
instances' processes), and its batches.

    python benchmarks/serve_profile.py [--clients 64] [--seconds 15] BUNDLE [-- SER-SERVE OPTIONS...]

The request and the load are triton_vs_serve.py's (an Open Inference Protocol infer request with a 2 s
WAV as AUDIO_FILE, wrk with `--clients` connections, a 3 s warm-up). Each thread's user + system time
comes from /proc/<pid>/task/*/stat before and after the measured run, for the server and its child
processes, so native threads (ONNX Runtime's pool) count as well as Python's: the event loop is the
server's first thread, its batch threads and the model's own pool follow; with `--instances 2` or more
each instance's process is listed too. Loopback only; wrk shares the cores.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import tempfile
from pathlib import Path

import httpx
import soundfile as sf
from serve_load import load, start_serve
from triton_vs_serve import HEADERS, infer_body, process_tree

from ser.audio import SAMPLE_RATE
from ser.bench.environment import cpu_info
from ser.bundle import Bundle
from ser.data.signals import synthetic_voice

TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[tuple[int, int], float]:
    """CPU seconds (user + system) of each live thread of `pid` and of its children (the model instances'
    processes at `--instances 2` or more), keyed by (process, thread)."""
    times = {}
    for process in process_tree(pid):
        for stat in Path(f"/proc/{process}/task").glob("*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # the thread ended
                continue
            times[process, int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return times


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, flags=re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("serve_options", nargs="*", help="after --: options for ser-serve")
    args = parser.parse_args()
    name = Bundle.load(args.bundle).manifest.model.name
    path = f"/v2/models/{name}/infer"
    buffer = io.BytesIO()
    sf.write(buffer, synthetic_voice(2 * SAMPLE_RATE, seed=0), SAMPLE_RATE, format="WAV")
    data, header_length = infer_body(buffer.getvalue())
    headers = {**HEADERS, "Inference-Header-Content-Length": str(header_length)}
    options = ["--max-batch", "16", "--max-wait-ms", "5", "--log-level", "warning", "--max-connections", "1024"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        body = work / "infer.bin"
        body.write_bytes(data)
        server, url = start_serve(args.bundle, *options, *args.serve_options)
        try:
            load(url, body, args.clients, 3.0, 10**9, work, path, headers)  # warm-up
            before, metrics_before = thread_cpu_s(server.pid), httpx.get(f"{url}/metrics").text
            result = load(url, body, args.clients, args.seconds, 10**9, work, path, headers)
            after, metrics_after = thread_cpu_s(server.pid), httpx.get(f"{url}/metrics").text
        finally:
            server.terminate()
            server.wait(timeout=30)
    answered = result["requests"]
    print(f"{cpu_info()['model']}, {os.cpu_count()} CPUs; ser-serve {' '.join(args.serve_options) or '(defaults)'}")
    print(f"{result['throughput_rps']:.1f} req/s, p50 {result['latency_ms']['p50']:.0f} ms, "
          f"p99 {result['latency_ms']['p99']:.0f} ms, {result['errors']} errors")  # fmt: skip
    batches = metric(metrics_after, "ser_batch_size_count") - metric(metrics_before, "ser_batch_size_count")
    clips = metric(metrics_after, "ser_batch_size_sum") - metric(metrics_before, "ser_batch_size_sum")
    busy = metric(metrics_after, "ser_inference_seconds_sum") - metric(metrics_before, "ser_inference_seconds_sum")
    if batches:
        print(f"{batches:.0f} batches, {clips / batches:.1f} clips each, {1000 * busy / batches:.1f} ms each")
    print("process/thread | CPU s | CPU ms per request")
    spent = {key: after[key] - before.get(key, 0.0) for key in after}
    for (pid, tid), seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        if seconds >= 0.05:
            role = "event loop" if tid == server.pid else "server thread" if pid == server.pid else "instance"
            print(f"{pid}/{tid} ({role}) | {seconds:.2f} | {1000 * seconds / max(answered, 1):.3f}")
    print(f"all | {sum(spent.values()):.2f} | {1000 * sum(spent.values()) / max(answered, 1):.3f}")


if __name__ == "__main__":
    sys.exit(main())
