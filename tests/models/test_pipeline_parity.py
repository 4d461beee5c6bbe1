"""The bundle answers what transformers.pipeline("audio-classification") answers on the same checkpoint."""

import numpy as np
import pytest

from ser.audio import load_audio
from ser.runtime import EmotionRecognizer


@pytest.mark.parametrize("backend", ["onnxruntime-cpu", "openvino-cpu"])
@pytest.mark.parametrize("name", ["wav2vec2", "hubert", "wavlm"])
def test_bundle_agrees_with_transformers_pipeline(tiny_checkpoint, tiny_bundle, write_clip, name, backend):
    """On either CPU engine: OpenVINO runs the bundle's own graph, and must answer as the original does."""
    from ser.runtime.recognizer import backend_problem

    if backend_problem(backend):
        pytest.skip(backend_problem(backend))
    from transformers import pipeline

    import ser.models  # noqa: F401  registers the WavLM emotion head with the Auto classes

    classifier = pipeline("audio-classification", model=str(tiny_checkpoint(name)), top_k=None, device="cpu")
    recognizer = EmotionRecognizer.load(tiny_bundle(name), backend=backend)
    assert recognizer.backend.name == backend
    for i, (seconds, rate) in enumerate([(1.0, 16_000), (2.3, 44_100), (0.6, 8_000)]):
        path = write_clip(f"clip{i}.wav", seconds=seconds, rate=rate, seed=i)
        expected = {r["label"]: r["score"] for r in classifier({"raw": load_audio(path), "sampling_rate": 16_000})}
        got = recognizer.predict(path)
        assert got.label == max(expected, key=expected.get)
        np.testing.assert_allclose([got.scores[k] for k in expected], list(expected.values()), atol=1e-4)
