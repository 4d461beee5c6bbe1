import json

import numpy as np
import pytest
import torch

from ser.export.onnx import remove_weight_norm
from ser.models import CheckpointError, get_spec, load_model
from tests.conftest import TINY_MODELS, speech_like

LENGTHS = [16_000, 9_001, 4_000, 12_345]


def _padded_vs_alone(module) -> float:
    clips = [torch.from_numpy(speech_like(n / 16_000, seed=i)) for i, n in enumerate(LENGTHS)]
    audio = torch.zeros(len(clips), max(LENGTHS))
    for row, clip in zip(audio, clips, strict=True):
        row[: len(clip)] = clip
    with torch.no_grad():
        batched = module(audio, torch.tensor(LENGTHS))
        alone = torch.cat([module(c[None], torch.tensor([len(c)])) for c in clips])
    return (batched - alone).abs().max().item()


@pytest.mark.parametrize("name", TINY_MODELS)
def test_padding_does_not_change_answers(tiny_checkpoint, name):
    module = load_model(name, tiny_checkpoint(name)).waveform()
    assert _padded_vs_alone(module) < 1e-4


def test_masked_group_norm_is_what_makes_padding_invisible(tiny_checkpoint):
    module = load_model("wav2vec2", tiny_checkpoint("wav2vec2")).waveform()
    assert module.group_norm is not None
    module.group_norm = None  # the plain GroupNorm: statistics over the padding too
    assert _padded_vs_alone(module) > 1e-3


@pytest.mark.parametrize("name", TINY_MODELS)
def test_checkpoint_round_trip(tiny_checkpoint, name):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    loaded = load_model(name, tiny_checkpoint(name))
    assert loaded.source["kind"] == "checkpoint" and len(loaded.source["sha256"]) == 64
    assert loaded.size == "tiny" and loaded.labels[0] == "angry"
    original = AutoModelForAudioClassification.from_pretrained(tiny_checkpoint(name)).eval()
    features = AutoFeatureExtractor.from_pretrained(tiny_checkpoint(name))  # the checkpoint's own front end
    inputs = features(speech_like(1.0), sampling_rate=16_000, return_tensors="pt")
    with torch.no_grad():
        expected = original(**inputs).logits
        got = loaded.waveform()(torch.from_numpy(speech_like(1.0))[None], torch.tensor([16_000]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_checkpoint_label_map_is_honoured(tmp_path):
    labels = ("calm", "excited", "tense")
    get_spec("wav2vec2").build("tiny", labels).save_pretrained(tmp_path)
    loaded = load_model("wav2vec2", tmp_path)
    assert loaded.labels == labels
    assert loaded.waveform()(torch.zeros(1, 8000), torch.tensor([8000])).shape == (1, 3)


def test_plain_state_dict_loads_with_weights_only(tmp_path):
    spec = get_spec("resnet18")
    model = spec.build("tiny")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    loaded = load_model("resnet18", tmp_path)
    for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_weight_norm_is_baked_into_a_plain_weight(tiny_checkpoint):
    module = load_model("wavlm", tiny_checkpoint("wavlm")).waveform()
    clip = torch.from_numpy(speech_like(0.5))[None]
    before = module(clip, torch.tensor([clip.shape[1]]))
    assert remove_weight_norm(module) == 1
    conv = module.model.wavlm.encoder.pos_conv_embed.conv
    assert not hasattr(conv, "parametrizations") and isinstance(conv.weight, torch.nn.Parameter)
    torch.testing.assert_close(module(clip, torch.tensor([clip.shape[1]])), before)


def test_random_init_is_seeded_and_says_so():
    a = load_model("hubert", size="tiny", random_init=True)
    b = load_model("hubert", size="tiny", random_init=True)
    assert a.source == {"kind": "random-init", "seed": 0, "architecture": "HubertForSequenceClassification"}
    for x, y in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(x, y)


def test_checkpoint_errors_name_the_problem(tmp_path, tiny_checkpoint, monkeypatch):
    with pytest.raises(CheckpointError, match=r"--model wav2vec2, but the checkpoint is a hubert model \(HubertFor"):
        load_model("wav2vec2", tiny_checkpoint("hubert"))
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_model("wav2vec2", tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_model("wav2vec2", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type 'bert' is none of ser's families"):
        load_model(None, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(CheckpointError, match="no weights"):
        load_model("wav2vec2", tmp_path)
    with pytest.raises(CheckpointError, match="not a hub id"):
        load_model("wav2vec2", tmp_path / "missing")
    with pytest.raises(CheckpointError, match="could not load from the Hugging Face hub"):
        load_model("wav2vec2", "nobody/no-such-model")  # the hub is offline in tests
    with pytest.raises(CheckpointError, match="size is fixed by the checkpoint"):
        load_model("wav2vec2", tiny_checkpoint("wav2vec2"), size="base")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint at runs/wavlm"):
        load_model("wavlm")


def test_default_checkpoint_is_the_run_folder(tiny_checkpoint, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_checkpoint("resnet18"), tmp_path / "runs" / "resnet18")
    monkeypatch.chdir(tmp_path)
    assert load_model("resnet18").source["path"] == str((tmp_path / "runs" / "resnet18").resolve())


def test_log_mel_matches_a_numpy_stft():
    from ser.models.frontends import LogMel

    frontend = LogMel(16_000, n_fft=400, hop_length=160, n_mels=32)
    clip = speech_like(0.5)
    got = frontend(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))[0].numpy()
    padded = np.pad(clip.astype(np.float64), 200)
    frames = np.lib.stride_tricks.sliding_window_view(padded, 400)[::160]
    window = np.hanning(401)[:400]  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    expected = np.log10(np.maximum(power @ frontend.mel_filters.numpy().astype(np.float64), 1e-10)).T
    assert got.shape == expected.shape == (32, 1 + len(clip) // 160)
    np.testing.assert_allclose(got, expected, atol=2e-3)
