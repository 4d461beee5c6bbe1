import hashlib

import numpy as np
import pytest
import soundfile as sf

from ser.audio import SAMPLE_RATE
from ser.labels import LABELS
from ser.training.synth import PROFILES, SynthError, plan_clip, synthesize_corpus


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.wav")}


def test_layout_format_and_durations(synth_corpus):
    assert sorted(p.name for p in synth_corpus.iterdir()) == sorted(label.capitalize() for label in LABELS)
    for label in LABELS:
        files = sorted((synth_corpus / label.capitalize()).iterdir())
        assert len(files) == 6
        info = sf.info(files[0])
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert all(0.5 < sf.info(f).duration < 6.0 for f in files)


def test_same_seed_same_corpus_other_seed_other_corpus(synth_corpus, tmp_path):
    again = synthesize_corpus(tmp_path / "again", per_class=6, seed=0)
    assert len(again) == 6 * len(LABELS)
    assert _digest(tmp_path / "again") == _digest(synth_corpus)
    synthesize_corpus(tmp_path / "other", per_class=6, seed=1)
    assert _digest(tmp_path / "other") != _digest(synth_corpus)


def test_profiles_differ_and_clips_overlap_between_classes():
    plans = {label: [plan_clip(label, i, seed=0) for i in range(200)] for label in LABELS}
    pitch = {label: np.array([p.pitch for p in plans[label]]) for label in LABELS}
    assert pitch["sad"].mean() < pitch["neutral"].mean() < pitch["surprised"].mean()
    assert np.mean([p.rate for p in plans["sad"]]) < np.mean([p.rate for p in plans["fearful"]])
    assert all(p.tremor > 0 for p in plans["fearful"]) and all(p.tremor == 0 for p in plans["happy"])
    # Jitter lets neighbouring classes overlap: no threshold on pitch alone separates angry from happy.
    assert pitch["angry"].max() > pitch["happy"].min() and pitch["happy"].max() > pitch["angry"].min()
    assert set(PROFILES) == set(LABELS)


def test_existing_folder_is_refused_and_left_alone(synth_corpus):
    before = _digest(synth_corpus)
    with pytest.raises(FileExistsError, match="already exists"):
        synthesize_corpus(synth_corpus, per_class=1)
    assert _digest(synth_corpus) == before


def test_missing_espeak_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SynthError, match="espeak-ng not found"):
        synthesize_corpus(tmp_path / "out", per_class=1)
    assert not (tmp_path / "out").exists()
