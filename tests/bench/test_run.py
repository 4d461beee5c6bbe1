import json

import pytest
import soundfile as sf

from ser.bench.run import Worker, WorkerError, eval_clips
from ser.bench.suite import parse_suite


def spec(**changes):
    return {
        "model": "wavlm", "size": "tiny", "checkpoint": None, "backend": "onnxruntime-cpu", "precision": "fp32",
        "device": "cpu", "threads": 1, "bundle": None, "cold_case": [1, 0.5], **changes,
    }  # fmt: skip


def test_worker_that_cannot_load_reports_why(tmp_path):
    with pytest.raises(WorkerError, match=r"BundleError: .*absent"):
        Worker(spec(bundle=str(tmp_path / "absent")), tmp_path / "w.log")


def test_worker_that_dies_is_reported_with_its_last_words(tmp_path, tiny_bundle):
    worker = Worker(spec(bundle=str(tiny_bundle("wavlm"))), tmp_path / "w.log")
    assert worker.ready["labels"][0] == "angry" and worker.ready["load_s"] > 0
    worker.process.kill()
    with pytest.raises(WorkerError, match="worker exited with code -9"):
        worker.ask({"cmd": "time", "batch": 1, "seconds": 0.5})


def test_worker_answers_bad_commands_with_an_error_and_stays_up(tmp_path, tiny_bundle):
    worker = Worker(spec(bundle=str(tiny_bundle("wavlm"))), tmp_path / "w.log")
    try:
        with pytest.raises(WorkerError, match="unknown command 'dance'"):
            worker.ask({"cmd": "dance"})
        with pytest.raises(WorkerError, match=r"AudioError: .*absent\.wav"):
            worker.ask({"cmd": "logits", "clips": [str(tmp_path / "absent.wav")]})
        assert worker.ask({"cmd": "time", "batch": 2, "seconds": 0.5})["s"] > 0
    finally:
        worker.close()
    assert worker.process.returncode == 0


def test_without_data_agreement_runs_on_synthetic_speech_like_clips(tmp_path):
    suite = parse_suite({"models": [{"model": "wavlm", "size": "tiny"}], "backends": ["onnxruntime-cpu"]}, tmp_path)
    clips = eval_clips(suite, tmp_path)
    assert len(clips) == 20 and all(c["label"] is None for c in clips)
    lengths = {sf.info(c["path"]).duration for c in clips}
    assert lengths == {1.0, 2.0, 3.0, 4.0}


def test_labelled_clips_are_a_seeded_sample_of_the_split_test_part(tmp_path, write_clip):
    for label in ("Angry", "Sad"):
        (tmp_path / "corpus" / label).mkdir(parents=True)
        for i in range(6):
            write_clip(f"corpus/{label}/{i}.wav", seconds=0.5, seed=i)
    raw = {"models": [{"model": "wavlm", "size": "tiny"}], "backends": ["onnxruntime-cpu"]}
    suite = parse_suite({**raw, "data": {"path": str(tmp_path / "corpus"), "clips": 5}}, tmp_path)
    clips = eval_clips(suite, tmp_path)
    assert len(clips) == 5 and clips == eval_clips(suite, tmp_path)
    assert {c["label"] for c in clips} <= {"angry", "sad"}
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"seed": 0, "fractions": {}, "train": [], "val": [], "test": [["Sad/1.wav", "sad"]]}))
    suite = parse_suite({**raw, "data": {"path": str(tmp_path / "corpus"), "split": str(split)}}, tmp_path)
    assert eval_clips(suite, tmp_path) == [{"path": str(tmp_path / "corpus" / "Sad" / "1.wav"), "label": "sad"}]
