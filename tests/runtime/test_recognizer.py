import re

import numpy as np
import pytest
import soundfile as sf

from ser.runtime import AudioError, BackendError, BundleError, EmotionRecognizer
from tests.conftest import TINY_MODELS


@pytest.fixture
def recognizer(tiny_bundle):
    with EmotionRecognizer.load(tiny_bundle("wavlm"), threads=2) as r:
        yield r


def test_predict_gives_a_label_and_all_scores(recognizer, write_clip):
    p = recognizer.predict(write_clip("a.wav", seconds=1.5))
    assert set(p.scores) == set(recognizer.labels) and len(p.scores) == 7
    assert sum(p.scores.values()) == pytest.approx(1.0, abs=1e-9)
    assert p.label == max(p.scores, key=p.scores.get)
    assert p.duration_s == pytest.approx(1.5)


def test_path_bytes_and_samples_agree(recognizer, write_clip):
    path = write_clip("a.wav", seconds=1.0)
    samples, rate = sf.read(path, dtype="float32")
    answers = [recognizer.predict(path), recognizer.predict(path.read_bytes()), recognizer.predict(samples, rate)]
    for p in answers[1:]:
        assert p.label == answers[0].label
        np.testing.assert_allclose(list(p.scores.values()), list(answers[0].scores.values()), atol=1e-6)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_batch_equals_one_by_one(tiny_bundle, write_clip, name):
    files = [
        write_clip("long.flac", seconds=2.0, rate=44_100, channels=2, seed=1),
        write_clip("short.wav", seconds=0.3, seed=2),
        write_clip("mid.ogg", seconds=1.1, rate=22_050, seed=3),
        write_clip("odd.mp3", seconds=0.77, rate=24_000, seed=4),
    ]
    with EmotionRecognizer.load(tiny_bundle(name), threads=2) as recognizer:
        alone = [recognizer.predict(f) for f in files]
        batched = recognizer.predict_batch(files, batch_size=3)  # two padded, length-sorted chunks
    for a, b in zip(alone, batched, strict=True):
        assert a.label == b.label and a.duration_s == b.duration_s
        np.testing.assert_allclose(list(a.scores.values()), list(b.scores.values()), atol=1e-5)


def test_bad_audio_raises_audio_error(recognizer, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF")
    with pytest.raises(AudioError, match=r"bad\.wav"):
        recognizer.predict(bad)


def test_tampered_bundle_is_refused(tiny_bundle, tmp_path):
    import shutil

    copy = shutil.copytree(tiny_bundle("resnet18"), tmp_path / "copy")
    with open(copy / "model.onnx", "r+b") as f:
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BundleError, match="does not match its sha256"):
        EmotionRecognizer.load(copy)


def test_unknown_backend_is_refused(tiny_bundle):
    with pytest.raises(BackendError, match="unknown backend 'tensorflow'"):
        EmotionRecognizer.load(tiny_bundle("wavlm"), backend="tensorflow")


def test_cuda_without_a_gpu_says_why(tiny_bundle):
    from ser.runtime.onnxrt import device_problem

    problem = device_problem("cuda")  # no CUDA provider, or one whose libraries or GPU are missing
    if problem is None:
        pytest.skip("ONNX Runtime runs on CUDA here")
    with pytest.raises(BackendError, match=f"onnxruntime-cuda: {re.escape(problem)}"):
        EmotionRecognizer.load(tiny_bundle("wavlm"), backend="onnxruntime-cuda")


def test_timeline_windows_are_the_clips_own_predictions(recognizer):
    from tests.conftest import speech_like

    samples = speech_like(4.5, seed=3)
    timeline = recognizer.timeline(samples, sample_rate=16_000, window_s=1.5, hop_s=1.0, batch_size=2)
    assert [(w.start_s, w.end_s) for w in timeline.windows] == [(0.0, 1.5), (1.0, 2.5), (2.0, 3.5), (3.0, 4.5)]
    for window in timeline.windows:
        alone = recognizer.predict(samples[int(window.start_s * 16_000) : int(window.end_s * 16_000)], 16_000)
        assert window.label == alone.label and window.scores == pytest.approx(alone.scores, abs=1e-5)
    mean = {k: np.mean([w.scores[k] for w in timeline.windows]) for k in timeline.scores}  # equal-length windows
    assert timeline.scores == pytest.approx(mean) and timeline.label == max(mean, key=mean.get)
    assert timeline.duration_s == pytest.approx(4.5)


def test_a_manifest_whose_labels_are_not_the_graphs_is_refused_at_load(tiny_bundle, tmp_path):
    """Labels and outputs edited to agree with each other, but not with the graph's 7 logits."""
    import json
    import shutil

    copy = shutil.copytree(tiny_bundle("resnet18"), tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["labels"], manifest["canonical_labels"] = ["neu", "hap", "sad"], []
    manifest["outputs"][0]["shape"] = ["batch", 3]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"logits of shape \[1, 7\] for one clip, but the manifest lists 3 labels"):
        EmotionRecognizer.load(copy, backend="onnxruntime-cpu")


def test_predictions_name_their_canonical_emotion(recognizer):
    prediction = recognizer.predict(np.zeros(8000, dtype=np.float32), sample_rate=16_000)
    assert prediction.canonical == prediction.label  # the seven labels are their own canonical names


def test_predict_each_answers_or_refuses_each_item_and_predict_batch_is_all_or_nothing(recognizer, write_clip):
    from tests.hostile import flac_claiming_frames, float_wav, wav_claiming_rate

    good = write_clip("good.wav", seconds=1.0)
    items = [good, wav_claiming_rate(1), flac_claiming_frames((1 << 36) - 1), float_wav(3.4e38), good.read_bytes()]
    results = recognizer.predict_each(items, batch_size=8)
    assert [type(r).__name__ for r in results] == ["Prediction", "AudioError", "AudioError", "AudioError", "Prediction"]
    assert "outside 4000-384000 Hz" in str(results[1]) and "more than 2 GiB" in str(results[2])
    assert "the model's answer" in str(results[3]) and "is not finite" in str(results[3])
    assert results[0] == results[4]  # the clip beside the bad ones answers as it would alone
    assert results[0] == recognizer.predict(good)
    with pytest.raises(AudioError, match="outside 4000-384000 Hz"):
        recognizer.predict_batch(items)
    long = write_clip("long.wav", seconds=3.0)
    (refused,) = recognizer.predict_each([long], max_seconds=2.0)
    assert isinstance(refused, AudioError) and "over the limit of 2 s" in str(refused)


def test_an_answer_is_never_nan(recognizer):
    from tests.hostile import float_wav

    with pytest.raises(AudioError, match="not finite"):
        recognizer.predict(float_wav(3.4e38))


@pytest.mark.parametrize("batch_size", [0, -3])
def test_batch_sizes_below_one_are_refused(recognizer, batch_size):
    clip = np.zeros(8000, np.float32)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        recognizer.predict_batch([clip], 16_000, batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        recognizer.timeline(clip, 16_000, batch_size=batch_size)


def test_timeline_window_count_is_bounded_before_any_window_is_made(recognizer):
    from ser.runtime.recognizer import window_bounds

    ten_seconds = np.zeros(160_000, np.float32)
    with pytest.raises(ValueError, match="makes 79201 windows, over the limit of 1000"):
        recognizer.timeline(ten_seconds, 16_000, window_s=0.1, hop_s=0.0001, max_windows=1000)
    assert len(window_bounds(160_000, 0.1, 0.0001)) == 79_201  # what it counted is what it would make
    for window, hop in [(0.1, 0.00001), (float("nan"), 1.0), (2.0, float("inf"))]:
        with pytest.raises(ValueError, match=r"finite|one sample"):
            window_bounds(160_000, window, hop)


def test_external_data_outside_the_bundle_is_a_bundle_error(tiny_bundle, tmp_path):
    """A graph whose weights point outside the folder (hashes all in order): ONNX Runtime refuses it, and
    the refusal is a BundleError naming the file, as ser-infer's exit status 2 says."""
    import hashlib
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    copy = shutil.copytree(tiny_bundle("resnet18"), tmp_path / "bundle")
    model = onnx.load(copy / "model.onnx")
    convert_model_to_external_data(model, location="stolen.data", size_threshold=0)
    onnx.save_model(model, copy / "model.onnx")
    (copy / "stolen.data").rename(tmp_path / "stolen.data")
    model = onnx.load(copy / "model.onnx", load_external_data=False)
    for tensor in model.graph.initializer:  # onnx's writer refuses '..'; an attacker's does not
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../stolen.data"
    (copy / "model.onnx").write_bytes(model.SerializeToString())
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = hashlib.sha256((copy / "model.onnx").read_bytes()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"model\.onnx: the runtime cannot load it"):
        EmotionRecognizer.load(copy, backend="onnxruntime-cpu")
    script = Path(sys.executable).parent / "ser-infer"
    clip = tmp_path / "a.wav"
    sf.write(clip, np.zeros(8000, np.float32), 16_000)
    result = subprocess.run([script, copy, clip], capture_output=True, text=True)
    assert result.returncode == 2 and "the runtime cannot load it" in result.stderr and "Traceback" not in result.stderr
