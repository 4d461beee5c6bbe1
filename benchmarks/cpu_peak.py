"""How much arithmetic a 4-second clip costs, and what this CPU can do at best, to put speed-ups in scale.

    python benchmarks/cpu_peak.py [--threads 2] [--out benchmarks/results/cpu_peak.json]

- Compute per clip: FLOPs counted by torch's FlopCounterMode (matmuls and convolutions; one
  multiply-add is two FLOPs) for each model at its benchmark size, split into the convolutional
  feature encoder and the rest.
- Practical peak: the best of several runs of a large square GEMM (2048³), in FP32 through
  PyTorch and in INT8 through ONNX Runtime's MatMulInteger (u8 × s8, what VNNI accelerates),
  with the same thread count as the speed-up benchmark.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from torch.utils.flop_counter import FlopCounterMode

from ser.models import load_model

SIZE = 2048
MODELS = ("wav2vec2:base", "wavlm:base", "hubert:large", "resnet18:base")


def best_time(run, repeats: int = 10) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def fp32_peak() -> float:
    a, b = torch.randn(SIZE, SIZE), torch.randn(SIZE, SIZE)
    return 2 * SIZE**3 / best_time(lambda: torch.mm(a, b)) / 1e9


def int8_peak(threads: int) -> float:
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [SIZE, SIZE])],
        [
            helper.make_tensor(
                "b", TensorProto.INT8, [SIZE, SIZE], np.random.default_rng(0).integers(-127, 127, SIZE * SIZE)
            )
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(1).integers(0, 255, (SIZE, SIZE), dtype=np.uint8)
    onnx.checker.check_model(model)
    return 2 * SIZE**3 / best_time(lambda: session.run(None, {"a": a})) / 1e9


def clip_flops(model: str, size: str) -> dict:
    module = load_model(model, None, size, random_init=True).waveform()
    audio, lengths = torch.randn(1, 64_000) * 0.1, torch.tensor([64_000])
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(audio, lengths)
    total = counter.get_total_flops()
    by_module = counter.get_flop_counts()
    encoder = sum(sum(v.values()) for k, v in by_module.items() if k.endswith("feature_extractor"))
    return {
        "model": f"{model}:{size}",
        "gflop": round(total / 1e9, 1),
        "feature_encoder_gflop": round(encoder / 1e9, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_peak.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "threads": args.threads,
        "fp32_gemm_gflops": round(fp32_peak(), 1),
        "int8_gemm_gops": round(int8_peak(args.threads), 1),
        "clips": [clip_flops(*spec.split(":")) for spec in MODELS],
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
