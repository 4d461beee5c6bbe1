"""INT8 targets compared on one CPU: `portable` (7-bit weights) against `vnni` (full 8-bit weights).

    python benchmarks/int8_targets.py --data CORPUS [--model wav2vec2:base] [--clips 60] [--threads 2]
        [--out benchmarks/results/int8_targets.json]

Builds the model at its size with random weights and a decisive head (`decisive_head.py`: logits that
differ between clips by several units, so top-1 agreement means something), saves it as a checkpoint,
then exports static and dynamic INT8 for both targets from one traced FP32 graph (gate open: this
measures, it does not judge). Each bundle answers `--clips` clips of CORPUS (any folder of speech, e.g.
`ser-data synth`); agreement and the largest logit error are against PyTorch FP32 on the same clips.
Speed: one 4 s clip at batch 1 with `--threads`, PyTorch eager FP32 and every bundle timed in
interleaved rounds (cpu_speedup.py's method).
The machine's CPU and its INT8 numerics class are recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from cpu_speedup import time_rounds
from decisive_head import answers, decisive_checkpoint

from ser.bench.environment import cpu_info
from ser.export import ExportOptions, FloatGraphs, Gate, Int8Options, export_bundle
from ser.export.calibration import AudioFolderReader
from ser.models import load_model
from ser.runtime.onnxrt import OnnxRuntimeBackend

VARIANTS = {
    f"int8-{mode}-{target}": Int8Options(mode, target=target)
    for mode in ("static", "dynamic")
    for target in ("portable", "vnni")
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="wav2vec2:base")
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/int8_targets.json"))
    args = parser.parse_args()
    model, size = args.model.split(":")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="ser-int8-targets-") as tmp:
        work = Path(tmp)
        checkpoint = work / "checkpoint"
        head = decisive_checkpoint(model, size, args.data, checkpoint)
        module = load_model(model, checkpoint).waveform()
        base = ExportOptions(
            model, checkpoint=str(checkpoint), calibration_data=args.data, eval_data=args.data,
            calibration_clips=50, eval_clips=10, gate=Gate(min_agreement=0.0, max_f1_drop=None),
        )  # fmt: skip
        graphs = FloatGraphs(work / "graphs")
        bundles, export_s = {}, {}
        for name, int8 in VARIANTS.items():
            started = time.perf_counter()
            options = replace(base, int8=int8)
            bundles[name] = export_bundle(options, work / name, graph=graphs.get(options))
            export_s[name] = round(time.perf_counter() - started, 1)
        clips = AudioFolderReader.from_folder(args.data, args.clips, seed=7)
        with torch.inference_mode():
            reference = np.stack(
                [module(torch.from_numpy(f["audio"]), torch.from_numpy(f["lengths"])).numpy()[0] for f in clips]
            )
        spread = float(np.std(reference))
        results = {}
        backends = {
            name: OnnxRuntimeBackend(b.onnx_path, b.manifest.inputs, threads=args.threads)
            for name, b in bundles.items()
        }
        for backend in backends.values():
            backend.activate()
        for name, backend in backends.items():
            logits = np.stack([backend.infer(f)["logits"][0] for f in clips])
            results[name] = {
                "agreement": float(np.mean(logits.argmax(1) == reference.argmax(1))),
                "max_abs_logit_error": float(np.abs(logits - reference).max()),
                "export_s": export_s[name],
            }

        def pytorch(inputs: dict) -> None:
            with torch.inference_mode():
                module(torch.from_numpy(inputs["audio"]), torch.from_numpy(inputs["lengths"]))

        samples = time_rounds({"pytorch": pytorch, **{n: b.infer for n, b in backends.items()}}, 1, args.runs)
        medians = {name: statistics.median(s) for name, s in samples.items()}
        for name in backends:
            results[name]["median_ms"] = round(1000 * medians[name], 1)
            results[name]["speedup"] = round(medians["pytorch"] / medians[name], 2)
        for backend in backends.values():
            backend.deactivate()
    report = {
        "machine": cpu_info(),
        "model": args.model,
        "clips": len(clips),
        "threads": args.threads,
        "reference_logit_std": round(spread, 2),
        "head": head,
        "reference_answers": answers(reference),
        "pytorch_median_ms": round(1000 * medians["pytorch"], 1),
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| variant | agreement | max logit error | speed-up | export |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['agreement']:.1%} | {r['max_abs_logit_error']:.2f} | {r['speedup']:.2f}x "
            f"| {r['export_s']} s |"
        )


if __name__ == "__main__":
    main()
