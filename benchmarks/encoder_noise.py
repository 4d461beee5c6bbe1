"""How much 8-bit-sized noise in the feature encoder moves a model's answer, in FP32 PyTorch: no INT8 kernel
involved, so what it measures is the model's own conditioning, not the quantizer's.

    python benchmarks/encoder_noise.py --data CORPUS [--models wav2vec2 hubert wavlm wavlm-stock] [--clips 60]
        [--out benchmarks/results/encoder_noise.json]

Each model is built at base size with random weights and the decisive head of `decisive_head.py`
(clip-to-clip logit spread 4), as the gate benchmark builds it. Before each of feature-encoder
convolutions 2-7 (the ones static INT8 quantizes), uniform noise of one 8-bit step, (max - min) / 255 of
that input, is added: the rounding a per-tensor 8-bit activation would carry at best. Recorded: top-1
agreement of the noisy model with the clean one on `--clips` clips of CORPUS cut to 3 s, the largest
logit change, how far the feature encoder's output moved (share of its norm) and how far it moved after
the feature projection's LayerNorm, and per conv how coarse one 8-bit step of its input is (over the
input's RMS). `wavlm-stock` is WavLMForSequenceClassification (mean pooling) instead of ser's enhanced
head.
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


def run(model: str, checkpoint: Path, clips: list[np.ndarray], noise: bool) -> dict[str, np.ndarray]:
    """Logits [clips, labels], the feature encoder's outputs and the same after the feature projection's
    LayerNorm (over channels, per frame), and, per clip and conv 2-7, one 8-bit step of that conv's input
    over the input's RMS (how coarse per-tensor 8 bits is there)."""
    module = load_model(model, str(checkpoint)).waveform()
    encoder = module.model.base_model.feature_extractor
    steps: list[float] = []
    encoded: list[torch.Tensor] = []
    normed: list[torch.Tensor] = []

    def step_to_rms(conv: torch.nn.Module, args: tuple) -> None:
        x = args[0]
        steps.append(float((x.max() - x.min()) / 255 / x.pow(2).mean().sqrt()))

    convs = list(encoder.conv_layers)[1:]
    handles = [conv.register_forward_pre_hook(_one_step_noise if noise else step_to_rms) for conv in convs]
    handles.append(encoder.register_forward_hook(lambda _m, _a, out: encoded.append(out.clone())))
    norm = module.model.base_model.feature_projection.layer_norm
    handles.append(norm.register_forward_hook(lambda _m, _a, out: normed.append(out.clone())))
    torch.manual_seed(0)
    with torch.inference_mode():
        out = np.stack([module(torch.from_numpy(c)[None], torch.tensor([len(c)]))[0].numpy() for c in clips])
    for handle in handles:
        handle.remove()
    return {
        "logits": out,
        "encoded": encoded,
        "normed": normed,
        "steps": np.array(steps).reshape(len(clips), -1) if steps else None,
    }


def relative_change(clean: list[torch.Tensor], noisy: list[torch.Tensor]) -> float:
    """Mean over clips of the noise's share of the clean tensor's norm."""
    return round(float(np.mean([float((n - c).norm() / c.norm()) for c, n in zip(clean, noisy, strict=True)])), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--models", nargs="*", default=["wav2vec2", "hubert", "wavlm", "wavlm-stock"])
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
            clean, noisy = run(model, folder, clips, False), run(model, folder, clips, True)
            results[name] = {
                "architecture": load_model(model, str(folder)).architecture,
                "agreement": float(np.mean(clean["logits"].argmax(1) == noisy["logits"].argmax(1))),
                "max_abs_logit_change": round(float(np.abs(clean["logits"] - noisy["logits"]).max()), 3),
                "logit_std": round(float(clean["logits"].std()), 2),
                # how far the noise moved the feature encoder's output, and the same after the LayerNorm
                "encoder_relative_change": relative_change(clean["encoded"], noisy["encoded"]),
                "after_layer_norm_relative_change": relative_change(clean["normed"], noisy["normed"]),
                "step_to_rms_per_conv": np.round(clean["steps"].mean(axis=0), 4).tolist(),
                "head": head,
            }
            print(name, results[name], flush=True)
    report = {"machine": cpu_info(), "clips": len(clips), "date": time.strftime("%Y-%m-%d"), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
