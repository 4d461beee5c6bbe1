"""soxan's and audeering's speech-classification checkpoints (the most-downloaded emotion models), exported
without --model and held against the published forward pass (tests/export/speech_classification_reference.py),
and the head layouts that cannot be faithful, refused with the reason."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from transformers import HubertConfig, Wav2Vec2Config

from ser.bundle import Bundle
from ser.cli.export import export_command
from ser.metrics import ccc
from ser.models import get_spec
from ser.runtime import EmotionRecognizer
from tests.conftest import speech_like
from tests.export.speech_classification_reference import (
    DIMENSIONS,
    load_published,
    published_answer,
    save_checkpoint,
)

TINY = get_spec("wav2vec2").sizes["tiny"]
LARGE_LAYOUT = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
SECONDS = (0.4, 1.3, 3.1)


def _labelled(labels: tuple[str, ...], **extra) -> dict:
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}, **extra}


# layout → (family, config, pooling_mode, do_normalize, return_attention_mask)
LAYOUTS: dict[str, Callable[[], tuple]] = {
    # soxan's emotion notebooks: wav2vec2 (base, group norm), mean pooling, the labels of the corpus
    "soxan-wav2vec2-mean": lambda: (
        "wav2vec2", Wav2Vec2Config(**TINY, **_labelled(("anger", "disgust", "fear", "happiness", "sadness"))),
        "mean", True, False,
    ),
    "soxan-wav2vec2-max-xlsr": lambda: (
        "wav2vec2", Wav2Vec2Config(**TINY, **LARGE_LAYOUT, **_labelled(("neu", "hap", "ang", "sad"))),
        "max", True, True,
    ),
    "soxan-hubert-sum": lambda: (
        "hubert", HubertConfig(**TINY, **_labelled(("angry", "calm", "happy", "sad", "neutral", "fearful", "disgust",
                                                      "surprised"))),
        "sum", True, False,
    ),
    # audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim: stable layer norm, regression, three dimensions
    "audeering-dimensional": lambda: (
        "wav2vec2",
        Wav2Vec2Config(**TINY, **LARGE_LAYOUT, **_labelled(DIMENSIONS, problem_type="regression")),
        "mean", True, True,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Callable[[str], Path]:
    cache: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in cache:
            family, config, pooling, normalize, mask = LAYOUTS[name]()
            cache[name] = save_checkpoint(tmp_path_factory.mktemp(name) / "checkpoint", family, config, pooling,
                                          normalize, mask)  # fmt: skip
        return cache[name]

    return make


@pytest.fixture(scope="module")
def bundle(layout, tmp_path_factory) -> Callable[[str], Path]:
    cache: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"bundle-{name}") / "bundle"
            result = _export(layout(name), out, "--embedding")
            assert result.exit_code == 0, result.output
            cache[name] = out
        return cache[name]

    return make


def _export(checkpoint: Path, out: Path, *args: str):
    return CliRunner().invoke(export_command, ["--checkpoint", str(checkpoint), "--out", str(out), "-q", *args])


def _clips() -> list[np.ndarray]:
    return [speech_like(seconds, seed=10 + i) for i, seconds in enumerate(SECONDS)]


@pytest.mark.parametrize("name", [n for n in LAYOUTS if n != "audeering-dimensional"])
def test_soxan_classification_heads_answer_as_the_published_model(layout, bundle, name):
    manifest = Bundle.load(bundle(name)).manifest
    config = json.loads((layout(name) / "config.json").read_text())
    assert manifest.model.architecture == config["architectures"][0]
    assert manifest.answer["kind"] == "categories" and manifest.validation["original"]["passed"]
    model, extractor = load_published(layout(name))
    with EmotionRecognizer.load(bundle(name), backend="onnxruntime-cpu") as recognizer:
        for clip in _clips():
            pooled, logits = published_answer(model, extractor, clip)
            expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            got = recognizer.predict(clip, sample_rate=16_000)
            assert got.label == manifest.labels[int(expected.argmax())], (got.scores, expected)
            np.testing.assert_allclose([got.scores[k] for k in manifest.labels], expected, atol=2e-3)
            np.testing.assert_allclose(got.embedding, pooled, atol=2e-3 * max(1.0, np.abs(pooled).max()))


def test_the_dimensional_model_answers_as_audeerings_card_does(layout, bundle):
    path = bundle("audeering-dimensional")
    manifest = Bundle.load(path).manifest
    assert manifest.answer == {"kind": "dimensions"} and manifest.labels == DIMENSIONS
    assert manifest.canonical_labels == (None, None, None)
    assert manifest.embedding_size == TINY["hidden_size"]
    assert len(manifest.validation["ccc"]) == 3 and min(manifest.validation["ccc"]) >= 0.999
    assert min(manifest.validation["original"]["ccc"]) >= 0.999
    model, extractor = load_published(layout("audeering-dimensional"))
    clips = [speech_like(s, seed=seed) for s in SECONDS for seed in range(4)]
    expected = np.stack([published_answer(model, extractor, c)[1] for c in clips])
    with EmotionRecognizer.load(path, backend="onnxruntime-cpu") as recognizer:
        got = recognizer.predict_batch(clips, sample_rate=16_000)
        alone = [recognizer.predict(c, sample_rate=16_000) for c in clips]
    values = np.array([[p.dimensions[d] for d in DIMENSIONS] for p in got])
    assert all(p.label is None and p.scores == {} and p.kind == "dimensions" for p in got)
    np.testing.assert_allclose(values, expected, atol=2e-3)
    for i in range(3):
        assert expected[:, i].std() > 1e-3  # the values vary between clips, so CCC says something
        assert ccc(expected[:, i], values[:, i]) >= 0.999
    # a padded batch answers as each clip alone, up to float rounding, which differs with the batch's shape in the
    # AVX-512 kernels (1.1e-5 seen on values ~10)
    alone_values = [[p.dimensions[d] for d in DIMENSIONS] for p in alone]
    np.testing.assert_allclose(values, alone_values, atol=1e-5, rtol=1e-5)


def test_padded_batches_answer_as_one_by_one_for_every_pooling(bundle):
    clips = [speech_like(s, seed=i) for i, s in enumerate((2.0, 0.5, 1.1))]
    for name in ("soxan-wav2vec2-max-xlsr", "soxan-hubert-sum"):
        with EmotionRecognizer.load(bundle(name), backend="onnxruntime-cpu") as recognizer:
            alone = [recognizer.predict(c, sample_rate=16_000).scores for c in clips]
            batched = [p.scores for p in recognizer.predict_batch(clips, sample_rate=16_000)]
        for a, b in zip(alone, batched, strict=True):
            np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], atol=1e-5)


def test_a_timeline_of_dimensions_is_the_duration_weighted_mean_of_its_windows(bundle):
    recording = np.concatenate([speech_like(2.0, seed=1), speech_like(1.5, seed=2) * 0.3])
    with EmotionRecognizer.load(bundle("audeering-dimensional"), backend="onnxruntime-cpu") as recognizer:
        timeline = recognizer.timeline(recording, sample_rate=16_000, window_s=1.0, hop_s=0.75)
    weights = np.array([w.end_s - w.start_s for w in timeline.windows])
    for d in DIMENSIONS:
        values = np.array([w.dimensions[d] for w in timeline.windows])
        assert timeline.dimensions[d] == pytest.approx((values * weights).sum() / weights.sum())
    assert timeline.label is None and len(timeline.to_dict()["windows"]) == len(timeline.windows)


def test_weights_of_an_older_head_under_a_stock_config_are_refused_naming_keys_and_head(layout, tmp_path):
    """ehcalabres' XLSR checkpoint: config says Wav2Vec2ForSequenceClassification, the weights hold
    classifier.dense and classifier.output and no projector; transformers would initialise a head afresh."""
    from safetensors.torch import load_file, save_file

    odd = tmp_path / "ehcalabres-style"
    shutil.copytree(layout("soxan-wav2vec2-max-xlsr"), odd)
    weights = load_file(odd / "model.safetensors")
    weights = {k.replace("classifier.out_proj", "classifier.output"): v for k, v in weights.items()}
    save_file(weights, odd / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((odd / "config.json").read_text())
    config |= {"architectures": ["Wav2Vec2ForSequenceClassification"]}
    (odd / "config.json").write_text(json.dumps(config))
    result = _export(odd, tmp_path / "b")
    assert result.exit_code == 1 and not (tmp_path / "b").exists()
    assert "do not fit Wav2Vec2ForSequenceClassification" in result.output
    assert "missing (classifier.bias, classifier.weight, projector.bias, projector.weight)" in result.output
    assert "unexpected (classifier.dense.bias, classifier.dense.weight, classifier.output.bias" in result.output
    assert "its head has classifier.dense, classifier.output, the layout of no class" in result.output

    # the same weights named as soxan's class: still refused, out_proj is what that head needs
    config |= {"architectures": ["Wav2Vec2ForSpeechClassification"]}
    (odd / "config.json").write_text(json.dumps(config))
    result = _export(odd, tmp_path / "b")
    assert result.exit_code == 1 and "do not fit Wav2Vec2ForSpeechClassification" in result.output
    assert "2 missing (classifier.out_proj.bias, classifier.out_proj.weight)" in result.output


def test_an_unknown_pooling_mode_is_refused(layout, tmp_path):
    odd = tmp_path / "median"
    shutil.copytree(layout("soxan-wav2vec2-mean"), odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps(config | {"pooling_mode": "median"}))
    result = _export(odd, tmp_path / "b")
    assert result.exit_code == 1 and "pooling_mode 'median' is not one of mean, sum, max" in result.output


def test_fp16_of_a_dimensional_model_is_judged_by_ccc_and_error(layout, tmp_path):
    result = _export(layout("audeering-dimensional"), tmp_path / "fp16", "--fp16")
    assert result.exit_code == 0, result.output
    validation = Bundle.load(tmp_path / "fp16").manifest.validation
    assert validation["min_ccc"] == 0.99 and min(validation["ccc"]) >= 0.99 and validation["passed"]
    assert validation["max_abs_logit_error"] <= validation["tolerance"]
