import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(sys.executable).parent


def _run(*args):
    return subprocess.run([SCRIPTS / "ser-infer", *map(str, args)], capture_output=True, text=True)


def test_json_lines_with_a_bad_file_among_good_ones(tiny_bundle, write_clip, tmp_path):
    good = [write_clip("a.wav", seconds=1.0), write_clip("b.flac", seconds=0.5, rate=44_100, seed=1)]
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"ID3 not really an mp3")
    result = _run(tiny_bundle("wavlm"), good[0], bad, good[1], "--json")
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(good[0]), str(bad), str(good[1])]
    assert "broken.mp3" in lines[1]["error"] and "label" not in lines[1]
    for line in (lines[0], lines[2]):
        assert line["label"] in line["scores"] and abs(sum(line["scores"].values()) - 1) < 1e-6


def test_human_output_and_success_status(tiny_bundle, write_clip):
    clip = write_clip("a.ogg", seconds=1.0)
    result = _run(tiny_bundle("resnet18"), clip, "--threads", "1")
    assert result.returncode == 0, result.stderr
    file, label, scores = result.stdout.strip().split("\t")
    assert file == str(clip) and label in scores


def test_unusable_bundle_exits_2(tmp_path, write_clip):
    result = _run(tmp_path, write_clip("a.wav"))
    assert result.returncode == 2
    assert "no manifest.json" in result.stderr


def test_a_backend_that_cannot_run_here_exits_2_saying_why(tiny_bundle, write_clip):
    from ser.runtime.onnxrt import device_problem
    from ser.runtime.tensorrt import unavailable_reason

    clip = write_clip("a.wav")
    if unavailable_reason() is not None:
        result = _run(tiny_bundle("wavlm"), clip, "--backend", "tensorrt")
        assert result.returncode == 2 and f"tensorrt: {unavailable_reason()}" in result.stderr
    if (problem := device_problem("tensorrt")) is not None:
        result = _run(tiny_bundle("wavlm"), clip, "--backend", "onnxruntime-tensorrt")
        # the library a load misses first depends on what the process loaded before (torch brings CUDA's)
        assert result.returncode == 2 and f"onnxruntime-tensorrt: {problem.split(':')[0]}" in result.stderr
    auto = _run(tiny_bundle("wavlm"), clip)  # auto finds something that runs
    assert auto.returncode == 0, auto.stderr


def test_every_file_gets_its_own_line_whatever_another_file_does(tiny_bundle, write_clip, tmp_path):
    """Hostile headers, an unreadable file and a long one among good files: each answered or refused alone."""
    from tests.conftest import without_root_privileges
    from tests.hostile import flac_claiming_frames, float_wav, wav_claiming_rate

    good = write_clip("good.wav", seconds=1.0)
    files = {
        "one-hertz.wav": wav_claiming_rate(1),
        "claims-2^36.flac": flac_claiming_frames((1 << 36) - 1),
        "near-float-max.wav": float_wav(3.4e38),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    locked = write_clip("locked.wav")
    locked.chmod(0)
    long = write_clip("long.wav", seconds=4.0)
    order = [good, *(tmp_path / n for n in files), locked, long, good]
    command = [
        SCRIPTS / "ser-infer",
        tiny_bundle("resnet18"),
        *order,
        "--json",
        "--max-seconds",
        "3",
        "--batch-size",
        "2",
    ]
    result = subprocess.run(without_root_privileges(command), capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]  # all of it is JSON: no bare NaN
    assert [line["file"] for line in lines] == list(map(str, order))
    assert "label" in lines[0] and lines[0] == lines[-1]
    reasons = [line.get("error", "") for line in lines[1:-1]]
    assert "outside 4000-384000 Hz" in reasons[0]
    assert "over the limit of 3 s" in reasons[1]  # 2^36 frames, refused from the header
    assert "not finite" in reasons[2]
    assert "cannot be read: Permission denied" in reasons[3]
    assert "4.0 s of audio is over the limit of 3 s" in reasons[4]


def test_a_dimensional_bundle_answers_named_dimensions(dimensional_bundle, write_clip):
    from ser.runtime import EmotionRecognizer

    clips = [write_clip("a.wav", seconds=1.2), write_clip("b.flac", seconds=0.6, rate=22_050, seed=3)]
    result = _run(dimensional_bundle, *clips, "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    with EmotionRecognizer.load(dimensional_bundle, backend="onnxruntime-cpu") as recognizer:
        expected = [recognizer.predict(c) for c in clips]
    for line, p in zip(lines, expected, strict=True):
        assert list(line["dimensions"]) == ["arousal", "dominance", "valence"]
        assert "label" not in line and "scores" not in line
        assert line["dimensions"] == pytest.approx(p.dimensions, abs=1e-4)  # batched with the other file
        assert len(line["embedding"]) == 32  # the tiny model's hidden size
    text = _run(dimensional_bundle, clips[0]).stdout.strip().split("\t")
    assert text[0] == str(clips[0]) and [t.split()[0] for t in text[1:]] == ["arousal", "dominance", "valence"]
