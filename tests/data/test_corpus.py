import json

import numpy as np
import pytest
import soundfile as sf

from ser.data.corpus import Corpus, DataError, Split, check_corpus, split_corpus
from ser.labels import LABELS, label_from_name


def _wav(path, seconds=0.5, rate=16_000):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), rate)
    return path


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("Angry", "angry"),
        ("ANG", "angry"),
        ("Suprised", "surprised"),
        ("ps", "surprised"),
        ("pleasant surprise", "surprised"),
        ("Fear", "fearful"),
        ("sadness", "sad"),
        ("calm", None),
        ("misc", None),
    ],
)
def test_label_aliases(name, label):
    assert label_from_name(name) == label


def test_folder_layout_any_case_synonyms_and_depth(tmp_path):
    _wav(tmp_path / "Angry" / "a.wav")
    _wav(tmp_path / "HAPPY" / "speaker1" / "b.wav")  # nested below the emotion folder
    _wav(tmp_path / "Suprised" / "c.wav")  # the Kaggle set's spelling
    _wav(tmp_path / "misc" / "d.wav")
    (tmp_path / "Angry" / "notes.txt").write_text("not audio")
    corpus = Corpus.from_path(tmp_path)
    assert sorted((c.path.name, c.label) for c in corpus.clips) == [
        ("a.wav", "angry"),
        ("b.wav", "happy"),
        ("c.wav", "surprised"),
    ]
    assert corpus.ignored == ("misc/: not an emotion name",)
    assert corpus.counts()["happy"] == 1 and corpus.counts()["sad"] == 0


def test_csv_manifest(tmp_path):
    _wav(tmp_path / "clips" / "1.wav")
    _wav(tmp_path / "clips" / "2.wav")
    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\nclips/1.wav,Sad\nclips/2.wav,ANG\nclips/3.wav,bored\n")
    corpus = Corpus.from_path(manifest)
    assert [(c.path, c.label) for c in corpus.clips] == [
        (tmp_path / "clips" / "1.wav", "sad"),
        (tmp_path / "clips" / "2.wav", "angry"),
    ]
    assert corpus.ignored == ("labels.csv:4: unknown label 'bored'",)


def test_bad_datasets_name_the_path(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        Corpus.from_path(tmp_path / "missing")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="no emotion folders"):
        Corpus.from_path(tmp_path)
    bad_csv = tmp_path / "x.csv"
    bad_csv.write_text("file,emotion\na.wav,sad\n")
    with pytest.raises(DataError, match=r"x\.csv: needs a header with path and label"):
        Corpus.from_path(bad_csv)


def test_check_reports_counts_durations_rates_and_unreadable(tmp_path):
    _wav(tmp_path / "Sad" / "a.wav", seconds=1.0, rate=16_000)
    _wav(tmp_path / "Sad" / "b.wav", seconds=2.0, rate=22_050)
    _wav(tmp_path / "Happy" / "c.wav", seconds=3.0, rate=16_000)
    (tmp_path / "Happy" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    truncated = _wav(tmp_path / "Happy" / "cut.wav", seconds=1.0)
    truncated.write_bytes(truncated.read_bytes()[:8000])
    report = check_corpus(Corpus.from_path(tmp_path))
    assert report.counts["sad"] == 2 and report.counts["happy"] == 1
    assert report.sample_rates == {16_000: 2, 22_050: 1}
    assert report.durations["min"] == pytest.approx(1.0, abs=1e-3)
    assert report.durations["max"] == pytest.approx(3.0, abs=1e-3)
    assert report.durations["total"] == pytest.approx(6.0, abs=1e-2)
    assert sorted(p.name for p, _ in report.unreadable) == ["broken.wav", "cut.wav"]
    assert all(reason for _, reason in report.unreadable)
    json.dumps(report.to_dict())  # serialisable for --json


def _corpus(tmp_path, per_label):
    for label, n in zip(LABELS, per_label, strict=True):
        for i in range(n):
            (tmp_path / label / f"{i}.wav").parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / label / f"{i}.wav").touch()  # the split never opens files
    return Corpus.from_path(tmp_path)


def test_split_is_stratified_disjoint_and_reproducible(tmp_path):
    corpus = _corpus(tmp_path, [20, 10, 30, 20, 40, 20, 10])
    split = split_corpus(corpus, seed=3, val_fraction=0.1, test_fraction=0.2)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert sum(len(p) for p in parts) == len(corpus.clips) == len(set.union(*parts))
    for label, n in corpus.counts().items():
        assert sum(c.label == label for c in split.test) == round(0.2 * n)
        assert sum(c.label == label for c in split.val) == round(0.1 * n)
    assert split_corpus(corpus, seed=3, val_fraction=0.1, test_fraction=0.2) == split
    assert split_corpus(corpus, seed=4, val_fraction=0.1, test_fraction=0.2).test != split.test


def test_split_saves_and_loads_relative_to_the_data_root(tmp_path):
    corpus = _corpus(tmp_path / "data", [5] * 7)
    split = split_corpus(corpus, seed=0)
    split.save(tmp_path / "split.json", corpus.root)
    assert all(not p.startswith("/") for p, _ in json.loads((tmp_path / "split.json").read_text())["test"])
    assert Split.load(tmp_path / "split.json", corpus.root) == split


def test_split_rejects_bad_fractions(tmp_path):
    with pytest.raises(DataError, match="fractions"):
        split_corpus(_corpus(tmp_path, [5] * 7), val_fraction=0.5, test_fraction=0.5)
