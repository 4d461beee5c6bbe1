"""Which operators must stay FP32 in an FP16 graph: logit error against FP32 with each one converted.

    python benchmarks/fp16_keep_list.py [--models wav2vec2:base resnet18:base]
        [--out benchmarks/results/fp16_keep_list.json]

Exports each model (random weights, optimised FP32), then converts it to FP16 several ways: with
ser's policy (the op types in `FP16_KEEP_FP32_OPS` and the length arithmetic in FP32), with nothing
kept, with either half alone, and with the policy minus one op type at a time. Each variant runs
(ONNX Runtime, CPU) on speech-like clips of 1, 4 and 30 seconds; the table is the largest |logit
error| against the FP32 graph, or "non-finite" when FP16 overflowed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ser.data.signals import synthetic_voice
from ser.export.onnx import export_onnx
from ser.export.optimize import FP16_KEEP_FP32_OPS, convert_fp16, optimize_graph
from ser.models import load_model

SECONDS = (1, 4, 30)


def logits(path: Path, clips: list[np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = [{"audio": c[None], "lengths": np.array([len(c)], dtype=np.int64)} for c in clips]
    return [session.run(["logits"], f)[0] for f in feeds]


def max_error(got: list[np.ndarray], expected: list[np.ndarray]) -> float | str:
    if not all(np.isfinite(g).all() for g in got):
        return "non-finite"
    return float(max(np.abs(g - e).max() for g, e in zip(got, expected, strict=True)))


def measure(model: str, size: str, work: Path) -> dict:
    module = load_model(model, None, size, random_init=True).waveform()
    export_onnx(module, work / "raw.onnx", fuse_attention=True)
    optimize_graph(work / "raw.onnx", work / "fp32.onnx")
    clips = [synthetic_voice(16_000 * s, seed=s) for s in SECONDS]
    reference = logits(work / "fp32.onnx", clips)
    variants = {
        "ser's policy (op types + length arithmetic)": (FP16_KEEP_FP32_OPS, True),
        "nothing kept": ((), False),
        "length arithmetic only": ((), True),
        "op types only": (FP16_KEEP_FP32_OPS, False),
    }
    for op in FP16_KEEP_FP32_OPS:
        variants[f"policy, but {op} in FP16"] = (tuple(o for o in FP16_KEEP_FP32_OPS if o != op), True)
    errors = {}
    for name, (keep, lengths) in variants.items():
        convert_fp16(work / "fp32.onnx", work / "fp16.onnx", keep, keep_lengths=lengths)
        errors[name] = max_error(logits(work / "fp16.onnx", clips), reference)
        print(model, name, errors[name], flush=True)
    return {"model": f"{model}:{size}", "clip_seconds": SECONDS, "max_abs_logit_error": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["wav2vec2:base", "resnet18:base"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fp16_keep_list.json"))
    args = parser.parse_args()
    results = []
    for spec in args.models:
        with tempfile.TemporaryDirectory(prefix="ser-fp16-") as tmp:
            results.append(measure(*spec.split(":"), Path(tmp)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
