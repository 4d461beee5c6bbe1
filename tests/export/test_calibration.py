import numpy as np
import pytest

from ser.data.corpus import DataError
from ser.export.calibration import AudioFolderReader
from ser.labels import LABELS


def test_reads_a_labelled_folder_as_a_seeded_re_iterable_sample(synth_corpus):
    reader = AudioFolderReader.from_folder(synth_corpus, limit=10, seed=3, max_seconds=1.5)
    assert len(reader) == 10 and reader.labelled
    assert all(label in LABELS for label in reader.labels)
    assert all(0 < len(clip) <= 24_000 and clip.dtype == np.float32 for clip in reader.clips)
    first, second = list(reader), list(reader)
    assert len(first) == 10
    for a, b in zip(first, second, strict=True):
        assert a["audio"].shape == (1, int(a["lengths"][0])) and a["lengths"].dtype == np.int64
        np.testing.assert_array_equal(a["audio"], b["audio"])
    again = AudioFolderReader.from_folder(synth_corpus, limit=10, seed=3, max_seconds=1.5)
    assert again.labels == reader.labels
    other = AudioFolderReader.from_folder(synth_corpus, limit=10, seed=4, max_seconds=1.5)
    assert [len(c) for c in other.clips] != [len(c) for c in reader.clips]
    assert reader.label_indices().tolist() == [LABELS.index(label) for label in reader.labels]


def test_onnxruntime_adapter_is_single_pass_with_rewind(synth_corpus):
    reader = AudioFolderReader.from_folder(synth_corpus, limit=3)
    seen = []
    adapter = reader.onnxruntime_reader(on_feed=lambda: seen.append(1))
    feeds = [adapter.get_next() for _ in range(4)]
    assert feeds[3] is None and all(f is not None for f in feeds[:3])
    assert len(seen) == 3 and len(adapter) == 3
    adapter.rewind()
    assert adapter.get_next() is not None


def test_unlabelled_folder_gives_clips_without_labels(tmp_path, write_clip):
    (tmp_path / "clips").mkdir()
    for i in range(3):
        write_clip(f"clips/{i}.wav", seconds=0.5, seed=i)
    (tmp_path / "clips" / "broken.wav").write_bytes(b"RIFF....not audio")
    reader = AudioFolderReader.from_folder(tmp_path / "clips")
    assert len(reader) == 3, "the unreadable file is skipped"
    assert not reader.labelled
    with pytest.raises(DataError, match="no labels"):
        reader.label_indices()


def test_folder_without_audio_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no audio clips"):
        AudioFolderReader.from_folder(tmp_path)
    with pytest.raises(DataError, match="must be a folder"):
        AudioFolderReader.from_folder(tmp_path / "missing")


def test_evaluation_leaves_out_the_calibration_clips_and_says_when_none_are_left(synth_corpus, tmp_path, write_clip):
    calibration = AudioFolderReader.from_folder(synth_corpus, limit=20, seed=0)
    evaluation = AudioFolderReader.from_folder(synth_corpus, limit=100, seed=1, exclude=calibration.paths)
    assert not set(calibration.paths) & set(evaluation.paths)
    assert evaluation.excluded == 20 and len(evaluation) == 42 - 20
    with pytest.raises(DataError, match="every clip is already used for calibration"):
        AudioFolderReader.from_folder(synth_corpus, seed=1, exclude=[p for p in synth_corpus.rglob("*.wav")])
    folder = tmp_path / "any-rate"
    folder.mkdir()
    write_clip("any-rate/a.wav", seconds=1.0, rate=44_100)  # decoded and resampled, not skipped
    assert len(AudioFolderReader.from_folder(folder).clips[0]) == 16_000
