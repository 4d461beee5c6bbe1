"""How much 8-bit-sized noise in the feature encoder moves a model's answer, in FP32 PyTorch: no INT8 kernel
involved, so what it measures is the model's own conditioning, not the quantizer's.

    python benchmarks/encoder_noise.py --data CORPUS [--models wav2vec2 wavlm wavlm-stock] [--clips 60]
        [--out benchmarks/results/encoder_noise.json]

Each model is built at base size with random weights and the decisive head of `decisive_head.py` (clip-
to-clip logit spread 4), as the gate benchmark builds it. Before each of feature-encoder convolutions
2-7 (the ones static INT8 quantizes), uniform noise of one 8-bit step, (max - min) / 255 of that input,
is added: the rounding a per-tensor 8-bit activation would carry at best. Recorded: top-1 agreement of
the noisy model with the clean one on `--clips` clips of CORPUS cut to 3 s, and the largest logit
change. `wavlm-stock` is WavLMForSequenceClassification (mean pooling) instead of ser's enhanced head.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from decisive_head import decisive_checkpoint

from ser.bench.environment import cpu_info
from ser.export.calibration import AudioFolderReader
from ser.models import REGISTRY, load_model
from ser.models.registry import ModelSpec


def _one_step_noise(module: torch.nn.Module, args: tuple) -> tuple:
    x = args[0]
    return (x + (torch.rand_like(x) - 0.5) * (x.max() - x.min()) / 255,)


def logits(model: str, checkpoint: Path, clips: list[np.ndarray], noise: bool) -> np.ndarray:
    module = load_model(model, str(checkpoint)).waveform()
    convs = list(module.model.base_model.feature_extractor.conv_layers)[1:]
    handles = [conv.register_forward_pre_hook(_one_step_noise) for conv in convs] if noise else []
    torch.manual_seed(0)
    with torch.inference_mode():
        out = np.stack([module(torch.from_numpy(c)[None], torch.tensor([len(c)]))[0].numpy() for c in clips])
    for handle in handles:
        handle.remove()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--models", nargs="*", default=["wav2vec2", "wavlm", "wavlm-stock"])
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/encoder_noise.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    clips = [c[: 3 * 16000] for c in AudioFolderReader.from_folder(args.data, args.clips, 1).clips]
    results = {}
    with tempfile.TemporaryDirectory(prefix="ser-encoder-noise-") as tmp:
        for name in args.models:
            model = "wavlm" if name == "wavlm-stock" else name
            folder = Path(tmp) / name
            spec = REGISTRY[model]
            if name == "wavlm-stock":  # build the stock head: put it first for this checkpoint only
                REGISTRY[model] = ModelSpec(**{**spec.__dict__, "heads": spec.heads[::-1]})
            try:
                head = decisive_checkpoint(model, "base", args.data, folder)
            finally:
                REGISTRY[model] = spec
            clean, noisy = logits(model, folder, clips, False), logits(model, folder, clips, True)
            results[name] = {
                "architecture": load_model(model, str(folder)).architecture,
                "agreement": float(np.mean(clean.argmax(1) == noisy.argmax(1))),
                "max_abs_logit_change": round(float(np.abs(clean - noisy).max()), 3),
                "logit_std": round(float(clean.std()), 2),
                "head": head,
            }
            print(name, results[name], flush=True)
    report = {"machine": cpu_info(), "clips": len(clips), "date": time.strftime("%Y-%m-%d"), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
