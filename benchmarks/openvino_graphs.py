"""Which INT8 graph OpenVINO should run for a ser bundle: the QDQ graph ser writes (after ONNX Runtime's
fusions), the same QDQ without them, or an IR quantized by NNCF — side by side, with ONNX Runtime beside.

    python benchmarks/openvino_graphs.py --optimized BUNDLE --plain BUNDLE [--nncf IR_FOLDER]
        [--rounds 10] [--threads 2] [--out FILE.json]

`--optimized`: `ser-export --int8 static` (the bundle as shipped); `--plain`: the same with
`--no-optimize` (standard ONNX operators only, nothing of ONNX Runtime's contrib set for OpenVINO's
frontend to decompose); `--nncf`: an IR folder from ser.bench.peers.export_openvino (NNCF's own
placement of the quantizers, on OpenVINO's conversion of the checkpoint). Every backend is loaded at
once and timed in interleaved rounds (a warm-up of two calls per case first) on 4 s clips of synthetic
speech at batch 1 and 4; p50 in ms. Speed only: with random weights the answers say nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from ser.bench.environment import cpu_info
from ser.bench.peers import OpenVinoBackend as NncfIr
from ser.bundle import Bundle
from ser.data.signals import synthetic_voice
from ser.runtime.onnxrt import OnnxRuntimeBackend
from ser.runtime.openvino import OpenVinoBackend

SAMPLES = 4 * 16_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimized", type=Path, required=True)
    parser.add_argument("--plain", type=Path, required=True)
    parser.add_argument("--nncf", type=Path)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    backends = {}
    for name, folder in (("optimized", args.optimized), ("plain", args.plain)):
        bundle = Bundle.load(folder)
        backends[f"openvino-cpu, ser QDQ {name}"] = OpenVinoBackend(
            bundle.onnx_path, bundle.manifest.inputs, args.threads
        )
        backends[f"onnxruntime-cpu, ser QDQ {name}"] = OnnxRuntimeBackend(
            bundle.onnx_path, bundle.manifest.inputs, threads=args.threads
        )
    if args.nncf:
        backends["openvino, NNCF IR"] = NncfIr(args.nncf, threads=args.threads)
    for backend in backends.values():
        backend.activate()
    p50_ms: dict[str, dict[str, float]] = {key: {} for key in backends}
    for batch in (1, 4):
        audio = np.stack([synthetic_voice(SAMPLES, seed=i) for i in range(batch)]).astype(np.float32)
        feeds = {"audio": audio, "lengths": np.full(batch, SAMPLES, dtype=np.int64)}
        samples: dict[str, list[float]] = {key: [] for key in backends}
        for backend in backends.values():
            backend.infer(feeds)
            backend.infer(feeds)
        keys = list(backends)
        for round_ in range(args.rounds):
            for key in keys[round_ % len(keys) :] + keys[: round_ % len(keys)]:
                started = time.perf_counter()
                backends[key].infer(feeds)
                samples[key].append(time.perf_counter() - started)
        for key, values in samples.items():
            p50_ms[key][f"{batch} x 4 s"] = round(1000 * statistics.median(values), 1)
    inputs = {"optimized": str(args.optimized), "plain": str(args.plain), "nncf": str(args.nncf)}
    report = {"machine": cpu_info(), "threads": args.threads, "rounds": args.rounds, "p50_ms": p50_ms, "inputs": inputs}
    print("| engine, graph | 1 × 4 s | 4 × 4 s |")
    print("|---|---:|---:|")
    for key, cells in p50_ms.items():
        print(f"| {key} | {cells['1 x 4 s']} ms | {cells['4 x 4 s']} ms |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
