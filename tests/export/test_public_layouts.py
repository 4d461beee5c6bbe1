"""Checkpoints in the layouts public fine-tunes have, exported through the CLI without --model and held
against transformers' own pipeline on the user's checkpoint: the bundle must answer as their model does."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from transformers import (
    Data2VecAudioConfig,
    Data2VecAudioForSequenceClassification,
    HubertConfig,
    HubertForSequenceClassification,
    UniSpeechSatConfig,
    UniSpeechSatForSequenceClassification,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForSequenceClassification,
    WavLMConfig,
    WavLMForSequenceClassification,
    pipeline,
)

from ser.bundle import Bundle
from ser.cli.export import export_command
from ser.models import get_spec
from ser.runtime import EmotionRecognizer
from tests.conftest import speech_like

TINY = get_spec("wav2vec2").sizes["tiny"]
LABELS_4 = ("neu", "hap", "ang", "sad")  # IEMOCAP-style four-class fine-tunes
LABELS_8 = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")  # RAVDESS's eight
SECONDS = (0.4, 1.3, 3.1)


def _decisive(model: torch.nn.Module) -> torch.nn.Module:
    """A trained head separates classes by whole units, random init by ~1e-3: make top-1 comparisons mean
    something."""
    torch.nn.init.normal_(model.classifier.weight, std=2.0)
    return model


def _labelled(labels: tuple[str, ...]) -> dict:
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}


# layout name → (model built with random weights, do_normalize, return_attention_mask)
LAYOUTS: dict[str, Callable[[], tuple[torch.nn.Module, bool, bool]]] = {
    # superb-style: weighted layer sum + projection, four labels, no waveform normalisation
    "wav2vec2-weighted-projected-4": lambda: (
        Wav2Vec2ForSequenceClassification(
            Wav2Vec2Config(**TINY, use_weighted_layer_sum=True, classifier_proj_size=16, **_labelled(LABELS_4))
        ),
        False,
        False,
    ),
    # the large layout: stable layer norm, layer-norm feature encoder with conv bias, eight labels
    "hubert-large-layout-8": lambda: (
        HubertForSequenceClassification(
            HubertConfig(
                **TINY,
                feat_extract_norm="layer",
                do_stable_layer_norm=True,
                conv_bias=True,
                **_labelled(LABELS_8),
            )
        ),
        True,
        True,
    ),
    "wavlm-stock": lambda: (
        WavLMForSequenceClassification(
            WavLMConfig(**TINY, use_weighted_layer_sum=True, classifier_proj_size=16, **_labelled(LABELS_8[:7]))
        ),
        False,
        False,
    ),
    "data2vec-audio": lambda: (
        Data2VecAudioForSequenceClassification(
            Data2VecAudioConfig(**get_spec("data2vec-audio").sizes["tiny"], **_labelled(LABELS_4))
        ),
        True,
        True,
    ),
    "unispeech-sat": lambda: (
        UniSpeechSatForSequenceClassification(UniSpeechSatConfig(**TINY, **_labelled(LABELS_4))),
        False,
        False,
    ),
}
FAMILY = {
    "wav2vec2-weighted-projected-4": "wav2vec2",
    "hubert-large-layout-8": "hubert",
    "wavlm-stock": "wavlm",
    "data2vec-audio": "data2vec-audio",
    "unispeech-sat": "unispeech-sat",
}


@pytest.fixture(scope="module")
def layout_checkpoint(tmp_path_factory) -> Callable[[str], Path]:
    cache: dict[str, Path] = {}

    def make(layout: str) -> Path:
        if layout not in cache:
            torch.manual_seed(0)
            model, normalize, attention_mask = LAYOUTS[layout]()
            path = tmp_path_factory.mktemp(layout)
            _decisive(model).save_pretrained(path)
            Wav2Vec2FeatureExtractor(do_normalize=normalize, return_attention_mask=attention_mask).save_pretrained(path)
            cache[layout] = path
        return cache[layout]

    return make


def _export(checkpoint: Path, out: Path, *args: str):
    return CliRunner().invoke(export_command, ["--checkpoint", str(checkpoint), "--out", str(out), "-q", *args])


def _hold_against_pipeline(checkpoint: Path, bundle: Path) -> None:
    """The bundle and transformers' pipeline on the user's checkpoint: same top-1, scores within 2e-3."""
    reference = pipeline("audio-classification", model=str(checkpoint), top_k=None, device="cpu")
    with EmotionRecognizer.load(bundle, backend="onnxruntime-cpu") as recognizer:
        for i, seconds in enumerate(SECONDS):
            clip = speech_like(seconds, seed=10 + i)
            expected = {d["label"]: d["score"] for d in reference(clip.copy())}
            got = recognizer.predict(clip, sample_rate=16_000)
            assert got.label == max(expected, key=expected.__getitem__), (seconds, got.scores, expected)
            assert set(got.scores) == set(expected)
            assert max(abs(got.scores[k] - expected[k]) for k in expected) < 2e-3, (seconds, got.scores, expected)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_public_layouts_export_without_model_and_answer_as_transformers_does(layout_checkpoint, tmp_path, layout):
    checkpoint = layout_checkpoint(layout)
    result = _export(checkpoint, tmp_path / "bundle")
    assert result.exit_code == 0, result.output
    manifest = Bundle.load(tmp_path / "bundle").manifest
    architecture = type(LAYOUTS[layout]()[0]).__name__
    assert (manifest.model.name, manifest.model.architecture) == (FAMILY[layout], architecture)
    assert manifest.validation["original"]["reference"] == f"transformers.{architecture}"
    assert manifest.validation["original"]["passed"] and manifest.validation["passed"]
    _hold_against_pipeline(checkpoint, tmp_path / "bundle")


@pytest.mark.parametrize("name", ["wavlm", "resnet18"])
def test_sers_own_heads_answer_as_their_pipeline_does(tiny_checkpoint, tmp_path, name):
    result = _export(tiny_checkpoint(name), tmp_path / "bundle")
    assert result.exit_code == 0, result.output
    manifest = Bundle.load(tmp_path / "bundle").manifest
    assert manifest.model.name == name and manifest.validation["original"]["passed"]
    _hold_against_pipeline(tiny_checkpoint(name), tmp_path / "bundle")


def test_labels_are_kept_as_the_checkpoint_names_them_with_their_canonical_emotion(layout_checkpoint, tmp_path):
    assert _export(layout_checkpoint("wav2vec2-weighted-projected-4"), tmp_path / "b4").exit_code == 0
    manifest = Bundle.load(tmp_path / "b4").manifest
    assert manifest.labels == LABELS_4
    assert manifest.canonical_labels == ("neutral", "happy", "angry", "sad")
    with EmotionRecognizer.load(tmp_path / "b4", backend="onnxruntime-cpu") as recognizer:
        prediction = recognizer.predict(speech_like(1.0), sample_rate=16_000)
    assert prediction.canonical == dict(zip(LABELS_4, manifest.canonical_labels, strict=True))[prediction.label]

    assert _export(layout_checkpoint("hubert-large-layout-8"), tmp_path / "b8").exit_code == 0
    manifest = Bundle.load(tmp_path / "b8").manifest
    assert manifest.labels == LABELS_8 and manifest.canonical_labels[1] is None  # calm has no counterpart
    assert manifest.canonical_labels[6] == "disgusted"


def test_a_model_that_disagrees_with_the_checkpoint_is_refused_naming_both(layout_checkpoint, tmp_path):
    result = _export(layout_checkpoint("wavlm-stock"), tmp_path / "b", "--model", "hubert")
    assert result.exit_code == 1
    assert "--model hubert, but the checkpoint is a wavlm model (WavLMForSequenceClassification)" in result.output
    assert not (tmp_path / "b").exists()
    # agreeing is fine, and the checkpoint's class is kept: the stock head, not ser's enhanced one
    assert _export(layout_checkpoint("wavlm-stock"), tmp_path / "b", "--model", "wavlm").exit_code == 0
    assert Bundle.load(tmp_path / "b").manifest.model.architecture == "WavLMForSequenceClassification"


def test_a_checkpoint_with_a_missing_head_is_refused_with_the_likely_class(layout_checkpoint, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "headless"
    shutil.copytree(layout_checkpoint("wav2vec2-weighted-projected-4"), broken)
    weights = load_file(broken / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith(("classifier.", "projector."))},
              broken / "model.safetensors", metadata={"format": "pt"})  # fmt: skip
    result = _export(broken, tmp_path / "b")
    assert result.exit_code == 1 and not (tmp_path / "b").exists()
    assert "do not fit Wav2Vec2ForSequenceClassification" in result.output
    assert "4 missing (classifier.bias, classifier.weight, projector.bias, projector.weight)" in result.output
    assert "look like a Wav2Vec2Model checkpoint" in result.output


def test_stock_weights_under_an_enhanced_head_config_are_refused_not_reinitialised(layout_checkpoint, tmp_path):
    """The failure this all began with: a stock WavLM fine-tune read as ser's enhanced head."""
    import json
    import shutil

    mislabelled = tmp_path / "mislabelled"
    shutil.copytree(layout_checkpoint("wavlm-stock"), mislabelled)
    config = json.loads((mislabelled / "config.json").read_text())
    config |= {"model_type": "wavlm-emotion", "architectures": ["WavLMForEmotion"]}
    (mislabelled / "config.json").write_text(json.dumps(config))
    result = _export(mislabelled, tmp_path / "b")
    assert result.exit_code == 1 and not (tmp_path / "b").exists()
    assert "do not fit WavLMForEmotion" in result.output and "unexpected (classifier.bias" in result.output
    assert "look like a WavLMForSequenceClassification checkpoint" in result.output


def test_duplicate_labels_and_headless_encoders_are_refused(tmp_path):
    from transformers import WavLMModel

    torch.manual_seed(0)
    Wav2Vec2ForSequenceClassification(
        Wav2Vec2Config(**TINY, id2label={0: "happy", 1: "sad", 2: "happy"})
    ).save_pretrained(tmp_path / "dup")
    result = _export(tmp_path / "dup", tmp_path / "b")
    assert result.exit_code == 1 and "label 'happy' is given twice (ids 0 and 2)" in result.output

    WavLMModel(WavLMConfig(**TINY)).save_pretrained(tmp_path / "encoder")
    result = _export(tmp_path / "encoder", tmp_path / "b")
    assert result.exit_code == 1 and "is a headless WavLMModel" in result.output
    assert "ser-train --checkpoint" in result.output
    assert not (tmp_path / "b").exists()


def test_bundles_answer_the_same_whichever_order_clips_are_padded_in(layout_checkpoint, tmp_path):
    """data2vec-audio's stacked positional convolutions would leak padding into the last frames."""
    assert _export(layout_checkpoint("data2vec-audio"), tmp_path / "b").exit_code == 0
    clips = [speech_like(s, seed=i) for i, s in enumerate((2.0, 0.5, 1.1))]
    with EmotionRecognizer.load(tmp_path / "b", backend="onnxruntime-cpu") as recognizer:
        alone = [recognizer.predict(c, sample_rate=16_000).scores for c in clips]
        batched = [p.scores for p in recognizer.predict_batch(clips, sample_rate=16_000)]
    for a, b in zip(alone, batched, strict=True):
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], atol=1e-5)
