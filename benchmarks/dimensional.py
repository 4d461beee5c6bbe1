"""audeering's dimensional model on one CPU: what its export costs and how fast its bundles answer.

    python benchmarks/dimensional.py --data CORPUS [--layers 12] [--threads 2] [--runs 8]
        [--out benchmarks/results/dimensional.json]

The checkpoint has the shape of `audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim` (wav2vec2-large-robust
cut to 12 layers: hidden 1024, 16 heads, stable layer norm; the soxan/card head; `problem_type:
"regression"`, arousal/dominance/valence) with random weights: speed and faithfulness to PyTorch, never
accuracy. Its head is made decisive (the dense layer's gain raised, out_proj scaled so the values lie about
0..1 as the real model's do) so the three values differ between clips by more than rounding, which is what a
CCC against PyTorch needs to mean anything.

Measured: the wall time of each export (`ser.export`: FP32 with the pooled embedding as the card returns it,
and static INT8 behind the dimensional gate — CCC per dimension shown at 95 % confidence and max error —
calibrated on 20 clips of CORPUS and judged on 40 others; and, for its speed whatever the gate says, the
same quantization with the gate open and no FP32 fallback), what each recorded against PyTorch, and the
latency of PyTorch eager FP32 and every bundle written on the same 4-second clips at batch 1 and 4,
interleaved.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from cpu_speedup import time_rounds

from ser.bench.environment import cpu_info
from ser.export import ExportOptions, Gate, Int8Options, export_bundle
from ser.models import load_model
from ser.models.speech_classification import Wav2Vec2ForSpeechClassification
from ser.runtime.onnxrt import OnnxRuntimeBackend

DIMENSIONS = ("arousal", "dominance", "valence")


def audeering_shaped(path: Path, layers: int) -> Path:
    """A random-weight checkpoint in the published layout, saved as save_pretrained leaves it."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor

    config = Wav2Vec2Config(
        hidden_size=1024, num_hidden_layers=layers, num_attention_heads=16, intermediate_size=4096,
        feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, problem_type="regression",
        pooling_mode="mean", id2label=dict(enumerate(DIMENSIONS)), label2id={d: i for i, d in enumerate(DIMENSIONS)},
    )  # fmt: skip
    torch.manual_seed(0)
    model = Wav2Vec2ForSpeechClassification(config).eval()
    with torch.no_grad():  # values about 0..1 as the real model's, spread between clips by the dense layer's gain
        model.classifier.dense.weight.mul_(20.0)
        model.classifier.out_proj.weight.normal_(std=0.5 / config.hidden_size**0.5)
        model.classifier.out_proj.bias.fill_(0.5)
    model.save_pretrained(path)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder of speech: 20 calibration + 40 evaluation clips")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dimensional.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record: dict = {"machine": {**cpu_info(), "threads": args.threads, "torch": torch.__version__,
                                "date": time.strftime("%Y-%m-%d")}, "layers": args.layers}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ser-dimensional-") as tmp:
        work = Path(tmp)
        checkpoint = audeering_shaped(work / "checkpoint", args.layers)
        exports = {
            "fp32": ExportOptions(checkpoint=str(checkpoint), embedding=True),
            "int8-static": ExportOptions(
                checkpoint=str(checkpoint), int8=Int8Options("static"), calibration_data=args.data,
                calibration_clips=20, eval_clips=40, gate=Gate(min_ccc=0.95, max_abs_error=0.1),
            ),
            # the same quantization with the gate open and no FP32 fallback: what the INT8 graph costs, whatever
            # the gate says of it (speed only: its CCC is recorded, not judged)
            "int8-static-ungated": ExportOptions(
                checkpoint=str(checkpoint), int8=Int8Options("static"), calibration_data=args.data,
                calibration_clips=20, eval_clips=40, gate=Gate(min_ccc=-1.0, max_abs_error=1e9, max_fp32_fraction=0),
            ),
        }  # fmt: skip
        backends, record["exports"] = {}, {}
        for name, options in exports.items():
            started = time.perf_counter()
            try:
                bundle = export_bundle(options, work / name)
            except Exception as error:  # a refused gate is a result too
                record["exports"][name] = {"error": str(error), "export_s": round(time.perf_counter() - started, 1)}
                print(name, "refused:", error, flush=True)
                continue
            manifest = bundle.manifest
            record["exports"][name] = {
                "export_s": round(time.perf_counter() - started, 1),
                "bytes": sum((bundle.path / f).stat().st_size for f in manifest.files),
                "parameters": manifest.model.parameters,
                "validation": {k: manifest.validation[k] for k in ("max_abs_logit_error", "ccc")},
                "original": {k: manifest.validation["original"][k]
                             for k in ("reference", "max_abs_logit_error", "ccc")},
                "quantization": {k: manifest.quantization.get(k) for k in
                                 ("ccc", "ccc_lower_bound", "max_abs_error", "fp32_nodes", "search", "seconds")},
            }  # fmt: skip
            print(name, json.dumps(record["exports"][name]), flush=True)
            backend = OnnxRuntimeBackend(bundle.onnx_path, manifest.inputs, threads=args.threads)
            backend.activate()
            backends[name] = backend
        module = load_model(checkpoint=checkpoint).waveform()

        def pytorch(inputs: dict) -> None:
            with torch.inference_mode():
                module(torch.from_numpy(inputs["audio"]), torch.from_numpy(inputs["lengths"]))

        runners = {"pytorch": pytorch, **{name: backend.infer for name, backend in backends.items()}}
        for batch in (1, 4):
            samples = time_rounds(runners, batch, args.runs)
            medians = {name: statistics.median(s) for name, s in samples.items()}
            record[f"batch{batch}"] = {
                name: {"median_ms": round(1000 * medians[name], 1),
                       "p90_ms": round(1000 * float(np.percentile(s, 90)), 1),
                       "speedup": round(medians["pytorch"] / medians[name], 2)}
                for name, s in samples.items()
            }  # fmt: skip
            print(f"batch {batch}", json.dumps(record[f"batch{batch}"]), flush=True)
        for backend in backends.values():
            backend.deactivate()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
