import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ser.data.corpus import Split
from ser.labels import LABELS
from ser.models import load_model
from ser.training.loop import TrainError, TrainOptions, evaluate, train

FAST = dict(size="tiny", batch_size=8, augment=None, workers=0, max_seconds=2.0)


def test_short_run_writes_a_loadable_checkpoint_and_test_metrics(synth_corpus, tmp_path):
    out = tmp_path / "run"
    result = train(TrainOptions("resnet18", synth_corpus, out, epochs=2, **FAST), show_progress=False)
    for name in ("split.json", "options.json", "start.json", "checkpoint/config.json", "checkpoint/model.safetensors",
                 "checkpoint/preprocessor_config.json"):  # fmt: skip
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no staging leftovers

    loaded = load_model("resnet18", out)
    assert loaded.labels == LABELS
    split = Split.load(out / "split.json", synth_corpus)
    assert len(split.test) == 7 and {c.label for c in split.test} == set(LABELS)
    saved = json.loads((out / "metrics.json").read_text())
    again = evaluate(loaded, split.test)
    assert saved["accuracy"] == pytest.approx(again.accuracy) == pytest.approx(result.test.accuracy)
    assert saved["confusion"] == [list(row) for row in again.confusion]
    assert sum(map(sum, saved["confusion"])) == 7


def test_a_split_without_test_clips_reports_validation_as_validation(synth_corpus, tmp_path, caplog):
    # Two clips per emotion: a test fraction of 0.2 rounds to none, a validation fraction of 0.5 to one.
    import shutil

    for folder in sorted(p for p in synth_corpus.iterdir() if p.is_dir()):
        (tmp_path / "corpus" / folder.name).mkdir(parents=True)
        for clip in sorted(folder.iterdir())[:2]:
            shutil.copy(clip, tmp_path / "corpus" / folder.name / clip.name)
    options = TrainOptions(
        "resnet18", tmp_path / "corpus", tmp_path / "run", epochs=1, val_fraction=0.5, test_fraction=0.2, **FAST
    )
    with caplog.at_level("INFO", logger="ser.training.loop"):
        result = train(options, show_progress=False)
    assert result.test is None and result.held_out == ("validation", result.validation)
    assert any(r.getMessage().startswith("validation split (7 clips)") for r in caplog.records)
    assert not any(r.getMessage().startswith("test split") for r in caplog.records)


def test_early_stopping_when_validation_stops_improving(synth_corpus, tmp_path):
    # With a zero learning rate nothing changes after epoch 1 (no BatchNorm statistics either), so
    # patience 1 stops at epoch 2.
    options = TrainOptions("wav2vec2", synth_corpus, tmp_path / "run", epochs=5, learning_rate=0.0, patience=1, **FAST)
    result = train(options, show_progress=False)
    assert (result.best_epoch, result.epochs_run, result.stopped_early) == (1, 2, True)


def test_transformers_train_with_augmentation_and_a_frozen_encoder(synth_corpus, tmp_path):
    options = TrainOptions(
        "wavlm", synth_corpus, tmp_path / "run", epochs=1, size="tiny", freeze_encoder=True, max_seconds=1.0, workers=1
    )
    from ser.models import get_spec

    scratch = get_spec("wavlm").from_scratch  # the same config as training's, so the same initial weights
    before = load_model("wavlm", size="tiny", random_init=True, labels=LABELS, overrides=scratch).model.state_dict()
    train(options, show_progress=False)
    after = load_model("wavlm", tmp_path / "run").model.state_dict()
    conv = "wavlm.feature_extractor.conv_layers.0.conv.weight"
    torch.testing.assert_close(after[conv], before[conv])  # frozen
    assert not torch.equal(
        after["wavlm.encoder.layers.0.feed_forward.output_dense.weight"],
        before["wavlm.encoder.layers.0.feed_forward.output_dense.weight"],
    )


def test_fine_tuning_a_checkpoint_with_other_labels_keeps_the_encoder(synth_corpus, tmp_path):
    from ser.models import get_spec

    torch.manual_seed(0)
    pretrained = get_spec("wav2vec2").build("tiny", labels=("calm", "excited"))
    pretrained.save_pretrained(tmp_path / "pretrained")
    options = TrainOptions(
        "wav2vec2",
        synth_corpus,
        tmp_path / "run",
        checkpoint=str(tmp_path / "pretrained"),
        epochs=1,
        learning_rate=0.0,
        **{**FAST, "size": None},
    )
    train(options, show_progress=False)
    tuned = load_model("wav2vec2", tmp_path / "run").model
    assert tuned.config.num_labels == 7 and tuned.config.id2label[6] == "surprised"
    torch.testing.assert_close(
        tuned.state_dict()["wav2vec2.encoder.layers.1.attention.q_proj.weight"],
        pretrained.state_dict()["wav2vec2.encoder.layers.1.attention.q_proj.weight"],
    )


def test_run_folder_rules(synth_corpus, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainError, match="nothing to resume"):
        train(TrainOptions("resnet18", synth_corpus, out, epochs=1, **FAST), show_progress=False, resume=True)
    train(TrainOptions("resnet18", synth_corpus, out, epochs=1, **FAST), show_progress=False)
    with pytest.raises(TrainError, match="already holds a run"):
        train(TrainOptions("resnet18", synth_corpus, out, epochs=1, **FAST), show_progress=False)
    with pytest.raises(TrainError, match="no pretrained feature encoder"):  # refused before the old run is replaced
        train(TrainOptions("resnet18", synth_corpus, out, freeze_encoder=True, **FAST), overwrite=True)
    assert (out / "checkpoint" / "model.safetensors").is_file() and (out / "state.pt").is_file()
    with pytest.raises(TrainError, match="seed=0, not 1"):
        train(TrainOptions("resnet18", synth_corpus, out, epochs=2, seed=1, **FAST), show_progress=False, resume=True)
    with pytest.raises(TrainError, match="size applies when training from scratch"):
        train(TrainOptions("resnet18", synth_corpus, tmp_path / "x", checkpoint=str(out), epochs=1, **FAST))


def test_resume_after_a_kill_loses_at_most_one_epoch(synth_corpus, tmp_path):
    out = tmp_path / "run"
    command = [
        Path(sys.executable).parent / "ser-train",
        "--model",
        "resnet18",
        "--data",
        str(synth_corpus),
        "--out",
        str(out),
        "--size",
        "tiny",
        "--epochs",
        "6",
        "--no-augment",
        "--workers",
        "0",
        "-q",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "history.json").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, "training ended before it could be interrupted"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = torch.load(out / "state.pt", weights_only=False)["progress"]["history"]
    assert 1 <= len(done) < 6

    subprocess.run([*command, "--resume"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert history[: len(done)] == done  # the epochs before the kill are kept, not redone
    assert (out / "metrics.json").is_file()


def test_class_weights_follow_inverse_frequency(synth_corpus, tmp_path):
    from ser.training.loop import _Run

    rows = ["path,label"]  # all six angry clips, three of each other emotion
    for label in LABELS:
        files = sorted((synth_corpus / label.capitalize()).iterdir())
        rows += [f"{f},{label}" for f in files[: 6 if label == "angry" else 3]]
    (tmp_path / "data.csv").write_text("\n".join(rows))
    run = _Run(TrainOptions("resnet18", tmp_path / "data.csv", tmp_path / "run", epochs=1, **FAST), False, False, False)
    counts = np.array([sum(c.label == label for c in run.split.train) for label in LABELS])
    weights = run._class_weights().cpu().numpy()
    np.testing.assert_allclose(weights, counts.sum() / (7 * counts), rtol=1e-6)
    assert weights[0] < weights[1]  # the frequent class weighs less


def test_fine_tuning_a_bare_wavlm_encoder_gives_the_enhanced_head(synth_corpus, tmp_path):
    """What starting from microsoft/wavlm-base-plus does: a WavLMModel with no head at all."""
    import json

    from transformers import AutoModelForAudioClassification, WavLMConfig, WavLMModel

    from ser.models.registry import REGISTRY

    torch.manual_seed(0)
    encoder = WavLMModel(WavLMConfig(**REGISTRY["wavlm"].sizes["tiny"]))
    encoder.save_pretrained(tmp_path / "wavlm-base-plus")
    options = TrainOptions("wavlm", synth_corpus, tmp_path / "run", checkpoint=str(tmp_path / "wavlm-base-plus"),
                           epochs=1, learning_rate=0.0, **{**FAST, "size": None})  # fmt: skip
    train(options, show_progress=False)
    assert json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())["model_type"] == "wavlm-emotion"
    tuned = AutoModelForAudioClassification.from_pretrained(tmp_path / "run" / "checkpoint")
    assert type(tuned).__name__ == "WavLMForEmotion" and tuned.config.num_labels == 7
    key = "encoder.layers.1.attention.q_proj.weight"
    torch.testing.assert_close(tuned.wavlm.state_dict()[key], encoder.state_dict()[key])
    start = json.loads((tmp_path / "run" / "start.json").read_text())
    assert start["architecture"] == "WavLMModel"
    assert "classifier.4.weight" in start["initialized"] and "layer_weights" in start["initialized"]
    assert not [k for k in start["initialized"] if k.startswith("wavlm.")]  # the encoder was loaded, all of it


def test_ser_train_infers_the_model_and_keeps_a_stock_head_class(synth_corpus, tmp_path):
    """A stock WavLMForSequenceClassification with four labels, fine-tuned on the seven: it stays stock, only
    its classifier is new, and the run says so."""
    from transformers import WavLMConfig, WavLMForSequenceClassification

    from ser.models.registry import REGISTRY

    torch.manual_seed(0)
    labels = {"id2label": dict(enumerate(("neu", "hap", "ang", "sad")))}
    stock = WavLMForSequenceClassification(WavLMConfig(**REGISTRY["wavlm"].sizes["tiny"], **labels))
    stock.save_pretrained(tmp_path / "stock")
    script = Path(sys.executable).parent / "ser-train"
    args = ["--data", synth_corpus, "--checkpoint", tmp_path / "stock", "--epochs", "1", "--workers", "0",
            "--no-augment", "--max-seconds", "2", "--lr", "0", "-q"]  # fmt: skip
    result = subprocess.run([script, *map(str, args), "--out", tmp_path / "run"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    tuned = load_model(None, tmp_path / "run")
    assert tuned.spec.name == "wavlm" and tuned.architecture == "WavLMForSequenceClassification"
    assert tuned.labels == LABELS
    start = json.loads((tmp_path / "run" / "start.json").read_text())
    assert start["architecture"] == "WavLMForSequenceClassification"
    assert start["initialized"] == ["classifier.bias", "classifier.weight"]

    refused = subprocess.run([script, *map(str, args), "--model", "hubert", "--out", tmp_path / "r2"],
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 1 and "--model hubert, but the checkpoint is a wavlm model" in refused.stderr


def test_resume_refuses_other_data_and_another_schedule(synth_corpus, tmp_path):
    import shutil

    out = tmp_path / "run"
    train(TrainOptions("resnet18", synth_corpus, out, epochs=2, **FAST), show_progress=False)
    other = tmp_path / "other"
    shutil.copytree(synth_corpus, other)
    next((other / "Sad").iterdir()).unlink()  # one clip fewer: not the data the run started on
    with pytest.raises(TrainError, match=r"was started on other data than .*other \(41 clips"):
        train(TrainOptions("resnet18", other, out, epochs=2, **FAST), show_progress=False, resume=True)
    moved = tmp_path / "moved"
    shutil.copytree(synth_corpus, moved)  # the same data elsewhere is the same data
    train(TrainOptions("resnet18", moved, out, epochs=2, **FAST), show_progress=False, resume=True)
    with pytest.raises(TrainError, match="was planned for 2 epochs, and its learning-rate schedule with it"):
        train(TrainOptions("resnet18", synth_corpus, out, epochs=7, **FAST), show_progress=False, resume=True)


def test_the_best_checkpoint_is_one_folder_replaced_in_one_rename(synth_corpus, tmp_path):
    out = tmp_path / "run"
    result = train(TrainOptions("wav2vec2", synth_corpus, out, epochs=3, patience=5, **FAST), show_progress=False)
    link = out / "checkpoint"
    assert link.is_symlink() and os.readlink(link) == f"checkpoint-epoch-{result.best_epoch:04d}"
    assert sorted(p.name for p in out.glob("checkpoint-epoch-*")) == [os.readlink(link)]  # earlier bests are gone
    assert load_model(checkpoint=out).source["path"] == str(link.absolute())  # the run folder is the checkpoint
