"""CPU speed-up of every export mode over PyTorch eager FP32, measured side by side in one run.

    python benchmarks/cpu_speedup.py --data CORPUS [--models wav2vec2:base wavlm:base hubert:large resnet18:base]
        [--threads 2] [--runs 10] [--out benchmarks/results/cpu_speedup.json]

For each model (random weights at the named size: speed does not depend on the weights) it exports
plain FP32 (no fusion), optimised FP32, dynamic INT8 and static INT8 (calibrated on CORPUS, any
folder of speech), then times PyTorch eager and each graph on the same 4-second clip at batch 1
and on 8 such clips at batch 8, all with the same thread count, in interleaved rounds so machine
noise hits every backend alike, with a short pause before each timed call so that one session's
spinning threads cannot slow the next. The accuracy gate is off here (random weights have no
meaningful answers); `ser-export`'s gate on trained checkpoints is what guards accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ser.data.signals import synthetic_voice
from ser.export import ExportOptions, Gate, Int8Options, export_bundle
from ser.models import load_model
from ser.runtime.onnxrt import OnnxRuntimeBackend

MODES = {
    "fp32-plain": dict(optimize=False),
    "fp32-opt": dict(),
    "int8-dynamic": dict(int8=Int8Options("dynamic")),
    "int8-static": dict(int8=Int8Options("static")),
}
CLIP_SECONDS = 4.0
# ONNX Runtime's pool threads spin for a while after a run; on two cores a session that ran just
# before would steal time from the next one. A pause between timed calls lets them go idle.
SETTLE_S = 0.05


def feeds(batch: int) -> dict[str, np.ndarray]:
    n = int(CLIP_SECONDS * 16_000)
    audio = np.stack([synthetic_voice(n, seed=row) for row in range(batch)])
    return {"audio": audio, "lengths": np.full(batch, n, dtype=np.int64)}


def time_rounds(runners: dict, batch: int, runs: int) -> dict[str, list[float]]:
    """Warm each runner twice, then `runs` rounds, each timing every runner once (interleaved)."""
    inputs = feeds(batch)
    for run in runners.values():
        run(inputs)
        run(inputs)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            run(inputs)
            samples[name].append(time.perf_counter() - start)
    return samples


def bench_model(model: str, size: str, data: str, threads: int, runs: int, work: Path) -> dict:
    torch.set_num_threads(threads)
    module = load_model(model, None, size, random_init=True).waveform()

    def pytorch(inputs: dict) -> None:
        with torch.inference_mode():
            module(torch.from_numpy(inputs["audio"]), torch.from_numpy(inputs["lengths"]))

    runners = {"pytorch": pytorch}
    sizes, export_s, backends = {}, {}, []
    gate = Gate(min_agreement=0.0, max_f1_drop=None)
    for mode, extra in MODES.items():
        options = ExportOptions(
            model, size=size, random_init=True, calibration_data=data, eval_data=data, calibration_clips=100,
            eval_clips=20, gate=gate, **extra,
        )  # fmt: skip
        start = time.perf_counter()
        bundle = export_bundle(options, work / f"{model}-{mode}")
        export_s[mode] = round(time.perf_counter() - start, 1)
        sizes[mode] = sum((bundle.path / name).stat().st_size for name in bundle.manifest.files)
        backend = OnnxRuntimeBackend(bundle.onnx_path, bundle.manifest.inputs, threads=threads)
        backend.activate()
        backends.append(backend)
        runners[mode] = backend.infer
    result = {"model": model, "size": size, "export_s": export_s, "bytes": sizes}
    for batch in (1, 8):
        samples = time_rounds(runners, batch, runs)
        medians = {name: statistics.median(s) for name, s in samples.items()}
        result[f"batch{batch}"] = {
            name: {
                "median_ms": round(1000 * medians[name], 1),
                "p90_ms": round(1000 * float(np.percentile(s, 90)), 1),
                "speedup": round(medians["pytorch"] / medians[name], 2),
            }
            for name, s in samples.items()
        }
    for backend in backends:
        backend.deactivate()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder of speech for static INT8 calibration")
    parser.add_argument("--models", nargs="+", default=["wav2vec2:base", "wavlm:base", "hubert:large", "resnet18:base"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_speedup.json"))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="ser-bench-") as tmp:
        for spec in args.models:
            model, size = spec.split(":")
            result = bench_model(model, size, args.data, args.threads, args.runs, Path(tmp))
            print(json.dumps(result), flush=True)
            results.append(result)
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "clip_seconds": CLIP_SECONDS, "results": results}, indent=1))


if __name__ == "__main__":
    main()
