"""Results as a run writes them, built from known samples and logits, for the report and compare tests."""

from pathlib import Path

import numpy as np
import pytest

from ser.bench.environment import environment
from ser.bench.results import Results
from ser.bench.run import _config_record, _suite_record, score
from ser.bench.suite import parse_suite
from ser.labels import LABELS

SUITE = {
    "models": [{"model": "wavlm", "size": "tiny"}],
    "backends": ["pytorch-eager", "onnxruntime-cpu", "onnxruntime-cuda"],
    "precisions": ["fp32", "int8-dynamic"],
    "batch_sizes": [1, 4],
    "durations": [1, 4],
    "data": {"path": "corpus", "clips": 40},
}
# per backend/precision: (latency scale against the reference, probability a clip's answer flips)
PROFILE = {("onnxruntime-cpu", "fp32"): (0.5, 0.0), ("onnxruntime-cpu", "int8-dynamic"): (0.25, 0.1)}


@pytest.fixture
def make_results():
    def make(seed: int = 0, slowdown: float = 1.0) -> dict:
        rng = np.random.default_rng(seed)
        suite = parse_suite(SUITE, Path("suite.yaml"))
        truth = rng.integers(0, len(LABELS), 40)
        clips = [{"path": f"corpus/{i}.wav", "label": LABELS[t]} for i, t in enumerate(truth)]
        reference_logits = rng.normal(size=(40, len(LABELS)))
        reference_logits[np.arange(40), truth] += rng.choice([0, 3], 40, p=[0.4, 0.6])  # ~60 % right
        records = []
        for config in suite.configs():
            if config.backend == "pytorch-eager" and not config.is_reference:
                continue  # PyTorch's own dynamic INT8: not part of these results
            record = _config_record(config)
            if config.backend == "onnxruntime-cuda":
                record["error"] = "BackendError: no CUDAExecutionProvider"
                records.append(record)
                continue
            scale, flips = (1.0, 0.0) if config.is_reference else PROFILE[config.backend, config.precision]
            logits = reference_logits + rng.normal(scale=1e-3 if flips == 0 else 0.05, size=reference_logits.shape)
            flipped = rng.random(40) < flips
            logits[flipped] = np.roll(logits[flipped], 1, axis=1)
            record |= {
                "labels": list(LABELS),
                "logits": logits.tolist(),
                "bytes": 1_000_000,
                "cold": {"load_s": 0.5, "first_s": 0.1},
                "memory": {"peak_rss_mib": 100.0, "gpu_mib": None, "torch_imported": config.is_reference},
            }
            for batch, seconds in suite.cases():
                mean = 0.01 * batch * seconds * scale * slowdown
                samples = rng.normal(mean, 0.02 * mean, 30).clip(min=0.1 * mean)
                record["cases"].append({"batch": batch, "seconds": seconds, "samples_s": samples.tolist()})
            records.append(record)
        return Results(
            suite=_suite_record(suite),
            environment=environment(),
            started="2026-11-24 12:00:00",
            wall_s=60.0,
            clips=tuple(clips),
            configs=tuple(score(records, clips)),
        )

    return make
