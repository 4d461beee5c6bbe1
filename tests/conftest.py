"""Shared fixtures: tiny checkpoints saved with save_pretrained, their bundles, and real audio files.

Everything is generated here; nothing is downloaded (the hub is switched off for the whole run).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SAMPLE_RATE = 16_000
# Every registered model needs a tiny fixture; tests/models/test_registry.py keeps this in step.
TINY_MODELS = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech-sat", "whisper", "resnet18")


def speech_like(seconds: float, rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """`seconds` of the exporter's speech-like validation signal at `rate`."""
    from ser.data.signals import synthetic_voice

    return synthetic_voice(int(seconds * rate), seed, rate)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Callable[[str], Path]:
    """name → a checkpoint folder as a user's fine-tuning would leave it (config, weights, feature extractor)."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    from ser.models import get_spec
    from ser.models.registry import WHISPER_LOG_MEL

    cache: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in cache:
            spec = get_spec(name)
            torch.manual_seed(0)
            model = spec.build("tiny")
            # A trained head separates classes by more than random init's ~1e-3, so top-1 comparisons
            # below test the graph rather than ties.
            head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
            torch.nn.init.normal_(head.weight, std=1.0)
            path = tmp_path_factory.mktemp(f"checkpoint-{name}")
            model.save_pretrained(path)
            if spec.frontend == WHISPER_LOG_MEL:
                WhisperFeatureExtractor(feature_size=model.config.num_mel_bins).save_pretrained(path)
            else:
                Wav2Vec2FeatureExtractor(do_normalize=spec.normalize, return_attention_mask=False).save_pretrained(path)
            cache[name] = path
        return cache[name]

    return make


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory) -> Callable[[str], Path]:
    """name → a bundle exported (and validated) from that model's tiny checkpoint."""
    from ser.export import ExportOptions, export_bundle

    cache: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"bundle-{name}") / name
            cache[name] = export_bundle(ExportOptions(name, checkpoint=str(tiny_checkpoint(name))), out).path
        return cache[name]

    return make


@pytest.fixture
def write_clip(tmp_path) -> Callable[..., Path]:
    """Write a real audio file: write_clip("a.flac", seconds=1.0, rate=44100, channels=2)."""

    def write(name: str, seconds: float = 1.0, rate: int = SAMPLE_RATE, channels: int = 1, seed: int = 0) -> Path:
        mono = speech_like(seconds, rate, seed)
        samples = mono if channels == 1 else np.stack([mono * (1 - 0.1 * c) for c in range(channels)], axis=1)
        path = tmp_path / name
        sf.write(path, samples, rate)
        return path

    return write


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """The demo corpus at test size: 6 espeak-ng clips per emotion, seed 0."""
    import shutil

    from ser.data.synth import ESPEAK, synthesize_corpus

    if shutil.which(ESPEAK) is None:
        pytest.skip(f"{ESPEAK} is not installed (make test installs it with apt-get)")
    out = tmp_path_factory.mktemp("corpus") / "corpus"
    synthesize_corpus(out, per_class=6, seed=0)
    return out


def without_root_privileges(command: list) -> list:
    """`command`, run so that file permissions apply even to root: root's override capabilities are dropped
    (setpriv, util-linux), so a mode-000 file really is unreadable to it."""
    import os
    import shutil

    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): a mode-000 file would still be readable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", *map(str, command)]


@pytest.fixture(scope="session")
def dimensional_checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint in audeering's dimensional layout (Wav2Vec2ForSpeechClassification, regression,
    arousal/dominance/valence, stable layer norm), saved as the published code leaves one."""
    from transformers import Wav2Vec2Config

    from ser.models import get_spec
    from tests.export.speech_classification_reference import DIMENSIONS, save_checkpoint

    config = Wav2Vec2Config(
        **get_spec("wav2vec2").sizes["tiny"],
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        problem_type="regression",
        id2label=dict(enumerate(DIMENSIONS)),
        label2id={d: i for i, d in enumerate(DIMENSIONS)},
    )
    path = tmp_path_factory.mktemp("dimensional") / "checkpoint"
    return save_checkpoint(path, "wav2vec2", config, "mean", normalize=True, attention_mask=True)


@pytest.fixture(scope="session")
def dimensional_bundle(dimensional_checkpoint, tmp_path_factory) -> Path:
    """The dimensional checkpoint's FP32 bundle, with the pooled-embedding output."""
    from ser.export import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("dimensional-bundle") / "bundle"
    return export_bundle(ExportOptions(checkpoint=str(dimensional_checkpoint), embedding=True), out).path
