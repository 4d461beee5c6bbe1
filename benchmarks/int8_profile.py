"""Where a static INT8 graph spends its time, by operator type (ONNX Runtime's own profiler).

    python benchmarks/int8_profile.py --data CORPUS [--model wavlm:base] [--runs 5] [--threads 2]
        [--out benchmarks/results/int8_profile.json]

Exports the model (random weights) to static INT8 with the gate open, runs one 4 s clip at batch 1
`--runs` times after a warm-up with profiling on, and sums the kernel time of every node by op type
(the mean per run). Also records the session's memory high-water mark with ONNX Runtime's CPU arena on
and off (a fresh process each, so one cannot inherit the other's peak).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

MEMORY_PROBE = """
import sys, numpy as np, onnxruntime as ort
from ser.bench.worker import peak_rss_mib
options = ort.SessionOptions(); options.intra_op_num_threads = int(sys.argv[3])
options.enable_cpu_mem_arena = sys.argv[2] == "on"
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
loaded = peak_rss_mib()
audio = np.random.default_rng(0).standard_normal((4, 8 * 16000)).astype(np.float32)
session.run(["logits"], {"audio": audio, "lengths": np.full(4, 8 * 16000, dtype=np.int64)})
print(loaded, peak_rss_mib())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="wavlm:base")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/int8_profile.json"))
    args = parser.parse_args()
    from ser.data.signals import synthetic_voice
    from ser.export import ExportOptions, Gate, Int8Options, export_bundle

    model, size = args.model.split(":")
    with tempfile.TemporaryDirectory(prefix="ser-int8-profile-") as tmp:
        options = ExportOptions(
            model, size=size, random_init=True, int8=Int8Options("static"), calibration_data=args.data,
            calibration_clips=50, eval_clips=10, gate=Gate(min_agreement=0.0, max_f1_drop=None),
        )  # fmt: skip
        bundle = export_bundle(options, Path(tmp) / "bundle")
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = args.threads
        session_options.enable_profiling = True
        session_options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(bundle.onnx_path), session_options, providers=["CPUExecutionProvider"])
        clip = synthetic_voice(4 * 16000, seed=0)[None]
        feeds = {"audio": clip, "lengths": np.array([clip.shape[1]], dtype=np.int64)}
        session.run(["logits"], feeds)  # warm-up, profiled too: left out below by its run index
        started = time.perf_counter()
        for _ in range(args.runs):
            session.run(["logits"], feeds)
        wall_ms = 1000 * (time.perf_counter() - started) / args.runs
        trace = json.loads(Path(session.end_profiling()).read_text())
        runs = [e for e in trace if e.get("cat") == "Session" and e["name"] == "model_run"]
        first_end = runs[0]["ts"] + runs[0]["dur"]
        by_op: dict[str, float] = defaultdict(float)
        for event in trace:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] > first_end:
                by_op[event["args"]["op_name"]] += event["dur"] / 1000 / args.runs
        memory = {}
        for arena in ("on", "off"):
            code = [sys.executable, "-c", MEMORY_PROBE, str(bundle.onnx_path), arena, str(args.threads)]
            loaded, peak = subprocess.run(code, capture_output=True, text=True, check=True).stdout.split()
            memory[f"arena_{arena}"] = {"after_load_mib": float(loaded), "peak_after_b4x8s_mib": float(peak)}
    from ser.bench.environment import cpu_info

    ranked = dict(sorted(by_op.items(), key=lambda kv: -kv[1]))
    report = {
        "machine": cpu_info(),
        "model": args.model,
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d"),
        "wall_ms_per_run": round(wall_ms, 1),
        "kernel_ms_per_run": round(sum(ranked.values()), 1),
        "by_op_type_ms": {op: round(ms, 2) for op, ms in ranked.items()},
        "memory": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
