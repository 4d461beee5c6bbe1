"""ser-data, ser-train, ser-eval and ser-export end to end, through the installed console scripts."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(sys.executable).parent


def _run(script, *args):
    return subprocess.run([SCRIPTS / script, *map(str, args)], capture_output=True, text=True)


def test_data_check_lists_unreadable_files_and_goes_on(synth_corpus, tmp_path):
    data = tmp_path / "data"
    (data / "Sad").mkdir(parents=True)
    for f in sorted((synth_corpus / "Sad").iterdir())[:2]:
        (data / "Sad" / f.name).write_bytes(f.read_bytes())
    (data / "Sad" / "broken.wav").write_bytes(b"RIFF junk")
    result = _run("ser-data", "check", data, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["sad"] == 2 and report["sample_rates"] == {"16000": 2}
    assert [u["path"] for u in report["unreadable"]] == [str(data / "Sad" / "broken.wav")]

    human = _run("ser-data", "check", data)
    assert "unreadable" in human.stdout and "broken.wav" in human.stdout and "16000 Hz × 2" in human.stdout
    missing = _run("ser-data", "check", tmp_path / "nope")
    assert missing.returncode == 2 and "no such folder" in missing.stderr


def test_data_synth(tmp_path):
    result = _run("ser-data", "synth", "--out", tmp_path / "c", "--per-class", "1", "--seed", "5")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "c").rglob("*.wav"))) == 7
    again = _run("ser-data", "synth", "--out", tmp_path / "c", "--per-class", "1")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_train_eval_export_infer(synth_corpus, tmp_path):
    run = tmp_path / "runs" / "resnet18"
    trained = _run(
        "ser-train", "--model", "resnet18", "--data", synth_corpus, "--out", run, "--size", "tiny",
        "--epochs", "1", "--workers", "0", "--max-seconds", "2", "-q",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "best epoch 1 of 1" in trained.stdout and "test accuracy" in trained.stdout

    evaluated = _run("ser-eval", run, "--data", synth_corpus, "--out", tmp_path / "eval", "--split", "test")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == json.loads(
        (run / "metrics.json").read_text()
    )
    assert (tmp_path / "eval" / "confusion.png").is_file()
    whole = _run("ser-eval", run, "--data", synth_corpus, "--out", tmp_path / "all")
    assert (
        whole.returncode == 0
        and sum(json.loads((tmp_path / "all" / "metrics.json").read_text())["support"].values()) == 42
    )

    bundle = tmp_path / "bundle"
    exported = _run("ser-export", "--model", "resnet18", "--checkpoint", run, "--out", bundle, "-q")
    assert exported.returncode == 0, exported.stderr
    clip = sorted((synth_corpus / "Happy").iterdir())[0]
    answer = json.loads(_run("ser-infer", bundle, clip, "--json").stdout)
    assert answer["label"] in answer["scores"]

    bad = _run("ser-train", "--model", "resnet18", "--data", synth_corpus, "--out", run, "--size", "tiny")
    assert bad.returncode == 1 and "already holds a run" in bad.stderr
    not_a_run = _run("ser-eval", tmp_path, "--data", synth_corpus, "--out", tmp_path / "e")
    assert not_a_run.returncode == 1 and "no config.json" in not_a_run.stderr


def test_data_check_lists_a_file_it_may_not_read_and_goes_on(synth_corpus, tmp_path):
    from tests.conftest import without_root_privileges

    data = tmp_path / "data"
    (data / "Happy").mkdir(parents=True)
    files = sorted((synth_corpus / "Happy").iterdir())[:2]
    for f in files:
        (data / "Happy" / f.name).write_bytes(f.read_bytes())
    locked = data / "Happy" / files[0].name
    locked.chmod(0)
    command = without_root_privileges([SCRIPTS / "ser-data", "check", data, "--json"])
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["happy"] == 1
    assert report["unreadable"] == [{"path": str(locked), "reason": "cannot be read: Permission denied"}]


def test_train_fine_tunes_a_whisper_speech_checkpoint_and_export_reads_the_run(synth_corpus, tmp_path):
    """`ser-train --checkpoint openai/whisper-*`, on a tiny local stand-in saved the way those are (the whole
    speech-recognition model, WhisperForConditionalGeneration): a new head on its encoder, written as
    save_pretrained writes it, with the feature extractor that feeds it, and exported without --model."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from ser.models import get_spec

    torch.manual_seed(0)
    speech = tmp_path / "whisper-speech"
    WhisperForConditionalGeneration(WhisperConfig(**get_spec("whisper").sizes["tiny"])).save_pretrained(speech)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(speech)
    run = tmp_path / "runs" / "whisper"
    trained = _run(
        "ser-train", "--checkpoint", speech, "--data", synth_corpus, "--out", run, "--epochs", "1",
        "--workers", "0", "--max-seconds", "2", "--batch-size", "8", "-q",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    assert config["architectures"] == ["WhisperForAudioClassification"] and len(config["id2label"]) == 7
    features = json.loads((run / "checkpoint" / "preprocessor_config.json").read_text())
    assert features["feature_extractor_type"] == "WhisperFeatureExtractor" and features["feature_size"] == 80
    evaluated = _run("ser-eval", run, "--data", synth_corpus, "--out", tmp_path / "eval", "--split", "test")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == json.loads(
        (run / "metrics.json").read_text()
    )
    exported = _run("ser-export", "--checkpoint", run, "--out", tmp_path / "bundle")
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "whisper" and manifest["validation"]["original"]["passed"]
