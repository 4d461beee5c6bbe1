"""Gated static INT8 on one CPU: what the default gate costs and what the gated bundle gains.

    python benchmarks/int8_gate.py --data CORPUS [--models wav2vec2:base wavlm:base hubert:large]
        [--demo-runs demo/runs] [--threads 2] [--runs 10] [--out benchmarks/results/int8_gate.json]

Each model is exported the way `ser-export --int8 static` does by default: 50 calibration clips of
CORPUS, the gate on 300 other clips (99 % top-1 agreement with FP32 PyTorch shown at 95 % confidence, ≤
0.5 macro-F1 points lost, ≤ 50 % of the nodes back in FP32). Base and large models have random weights
and a decisive head (`decisive_head.py`: the last layer centred and scaled so that PyTorch's logits
differ between clips by `spread` units, 4 by default, for a `model:size[:spread]` entry; how the head's
answers spread over the labels is recorded, since a model that answers one label shows nothing);
`--demo-runs` adds the demo's trained tiny models. Recorded per model: the export's wall time and its
parts, every candidate the search scored, and, for a passed gate, the speed of the bundle against
PyTorch eager FP32 at batch 1, one 4 s clip, `--threads` threads, in interleaved rounds.
CORPUS needs at least 350 clips (`ser-data synth --per-class 60`).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from cpu_speedup import time_rounds
from decisive_head import decisive_checkpoint

from ser.bench.environment import cpu_info
from ser.export import ExportGateError, ExportOptions, Int8Options, export_bundle
from ser.models import load_model
from ser.runtime.onnxrt import OnnxRuntimeBackend


def gated(name: str, model: str, checkpoint: Path, args: argparse.Namespace, work: Path) -> dict:
    data, threads, runs = args.data, args.threads, args.runs
    options = ExportOptions(
        model, checkpoint=str(checkpoint), int8=Int8Options("static"), calibration_data=data, calibration_clips=50
    )
    started = time.perf_counter()
    try:
        bundle = export_bundle(options, work / "bundle")
    except ExportGateError as error:
        return {"name": name, "passed": False, "export_s": round(time.perf_counter() - started, 1), "error": str(error)}
    export_s = round(time.perf_counter() - started, 1)
    q = bundle.manifest.quantization
    record = {
        "name": name,
        "passed": q["passed"],
        "export_s": export_s,
        "seconds": q["seconds"],
        "agreed": q["agreed"],
        "clips": q["clips"],
        "agreement_lower_bound": round(q["agreement_lower_bound"], 4),
        "fp32_nodes": len(q["fp32_nodes"]),
        "quantizable_nodes": q["quantized_nodes"] + len(q["fp32_nodes"]),
        "search": q["search"],
    }
    module = load_model(model, str(checkpoint)).waveform()

    def pytorch(inputs: dict) -> None:
        with torch.inference_mode():
            module(torch.from_numpy(inputs["audio"]), torch.from_numpy(inputs["lengths"]))

    with OnnxRuntimeBackend(bundle.onnx_path, bundle.manifest.inputs, threads=threads) as backend:
        samples = time_rounds({"pytorch": pytorch, "int8": backend.infer}, 1, runs)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    record |= {
        "pytorch_ms": round(1000 * medians["pytorch"], 1),
        "int8_ms": round(1000 * medians["int8"], 1),
        "speedup": round(medians["pytorch"] / medians["int8"], 2),
    }
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--models", nargs="*", default=["wav2vec2:base", "wavlm:base", "hubert:large"])
    parser.add_argument("--demo-runs", type=Path, default=None, help="the demo's run folders (trained tiny models)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/int8_gate.json"))
    args = parser.parse_args()
    # the export's own steps, timestamped: where a gated export's time goes, refusals included
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("ser").setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    records = []
    with tempfile.TemporaryDirectory(prefix="ser-int8-gate-") as tmp:
        jobs = []
        for entry in args.models:
            model, size, *scale = entry.split(":")
            jobs.append((entry, model, float(scale[0]) if scale else 4.0, size))
        for entry, model, spread, size in jobs:
            work = Path(tmp) / entry.replace(":", "-")
            head = decisive_checkpoint(model, size, args.data, work / "checkpoint", spread)
            records.append(gated(entry, model, work / "checkpoint", args, work))
            records[-1]["head"] = head
            print(json.dumps(records[-1]), flush=True)
        if args.demo_runs is not None:
            for run in sorted(p for p in args.demo_runs.iterdir() if (p / "checkpoint").exists()):
                work = Path(tmp) / f"demo-{run.name}"
                records.append(gated(f"{run.name}:tiny (trained)", run.name, run, args, work))
                print(json.dumps(records[-1]), flush=True)
    report = {
        "machine": cpu_info(),
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d"),
        "results": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| model | gate | agreed | shown ≥ | FP32 nodes | export s (reference / rank / search) | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in records:
        if "error" in r:
            print(f"| {r['name']} | missed | | | | {r['export_s']} | |")
            continue
        s = r["seconds"]
        print(
            f"| {r['name']} | passed | {r['agreed']}/{r['clips']} | {r['agreement_lower_bound']:.1%} "
            f"| {r['fp32_nodes']} of {r['quantizable_nodes']} | {r['export_s']} ({s['reference']} / {s['rank']} / "
            f"{s['search']}) | {r['speedup']:.2f}x |"
        )


if __name__ == "__main__":
    main()
