"""What a compile per input shape changes in the answers of ser's OpenVINO backend, on real clips.

    python benchmarks/openvino_shapes.py BUNDLE CORPUS [--clips 60] [--threads 2] [--out FILE.json]

`openvino-cpu` compiles a repeated input shape for that shape alone (ser.runtime.openvino); the gate judges
the backend one clip at a time, mostly on the compile that takes any shape. This runs each of `--clips`
clips of CORPUS (an audio folder, as for `--calibration-data`) through both: the backend with no compile per
shape, and one that compiles every clip's shape (`STATIC_AFTER` calls each). Reports top-1 agreement and the
largest and mean |Δlogit| between the two, and, as the scale to read them on, the same between ONNX
Runtime and the dynamic compile. With random weights, a measure of faithfulness, not of accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ser.bench.environment import cpu_info
from ser.bundle import Bundle
from ser.export.calibration import AudioFolderReader
from ser.runtime.onnxrt import OnnxRuntimeBackend
from ser.runtime.openvino import STATIC_AFTER, OpenVinoBackend


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    difference = np.abs(a - b)
    agreed = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    return {"top1_agreement": agreed, "max_abs": float(difference.max()), "mean_abs": float(difference.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    bundle = Bundle.load(args.bundle)
    clips = AudioFolderReader.from_folder(args.corpus, args.clips, seed=0).clips
    spec, rows = bundle.manifest.inputs, {"dynamic": [], "per shape": [], "onnxruntime": []}
    with (
        OpenVinoBackend(bundle.onnx_path, spec, args.threads, static_shapes=0) as dynamic,
        OnnxRuntimeBackend(bundle.onnx_path, spec, threads=args.threads) as onnxruntime,
    ):
        for clip in clips:
            rows["dynamic"].append(dynamic.logits_each([clip])[0])
            rows["onnxruntime"].append(onnxruntime.logits_each([clip])[0])
            with OpenVinoBackend(bundle.onnx_path, spec, args.threads, static_shapes=1) as per_shape:
                answers = [per_shape.logits_each([clip])[0] for _ in range(STATIC_AFTER)]
                assert per_shape.static_shapes_compiled, "the clip's shape got no compile of its own"
            rows["per shape"].append(answers[-1])
    logits = {name: np.stack(values) for name, values in rows.items()}
    report = {
        "machine": cpu_info(),
        "bundle": str(args.bundle),
        "precision": bundle.manifest.precision,
        "clips": len(clips),
        "per_shape_vs_dynamic": compare(logits["per shape"], logits["dynamic"]),
        "onnxruntime_vs_dynamic": compare(logits["onnxruntime"], logits["dynamic"]),
    }
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
