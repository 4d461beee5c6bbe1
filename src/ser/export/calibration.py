"""Real audio for calibration and the accuracy gate: a seeded, re-iterable reader over a folder.

ONNX Runtime's CalibrationDataReader is single-pass (`get_next` until None), but an export reads
the same clips several times: to calibrate, to score PyTorch, and to score each quantized
candidate. `AudioFolderReader` decodes a seeded sample of clips once and can be iterated any
number of times; `onnxruntime_reader()` is the thin adapter ONNX Runtime's quantizer wants.
Labelled folders (one subfolder per emotion, or a path,label CSV) also give each clip's label,
which the gate's macro-F1 needs; any other folder of audio gives clips without labels.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from ser.audio import SAMPLE_RATE, AudioError, load_audio
from ser.data.corpus import AUDIO_EXTENSIONS, Corpus, DataError
from ser.labels import LABELS, truth_indices

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class AudioFolderReader:
    """Decoded clips (16 kHz mono float32, at most `max_seconds` each) and their labels (or None)."""

    folder: Path
    clips: tuple[np.ndarray, ...]
    labels: tuple[str | None, ...]
    seed: int
    paths: tuple[Path, ...] = ()  # the files the clips came from
    excluded: int = 0  # files of the folder left out because another reader holds them

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        limit: int = 300,
        seed: int = 0,
        max_seconds: float = 8.0,
        exclude: Collection[Path] = (),
    ) -> AudioFolderReader:
        """Sample up to `limit` clips with `seed` (stratified by nothing: a plain seeded shuffle, so
        the sample follows the folder's own class mix), leaving out the files in `exclude` (the
        calibration clips, so that the gate judges on speech the quantizer never saw). Unreadable files
        are skipped with a warning."""
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"{folder}: calibration/evaluation data must be a folder of audio files")
        try:
            corpus = Corpus.from_path(folder)
            entries = [(clip.path, clip.label) for clip in corpus.clips]
        except DataError:  # not emotion folders: any audio below it, unlabelled
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            entries = [(path, None) for path in files]
        if not entries:
            raise DataError(f"{folder}: no audio clips found ({', '.join(sorted(AUDIO_EXTENSIONS))})")
        excluded_paths = {Path(p).resolve() for p in exclude}
        kept = [(path, label) for path, label in entries if path.resolve() not in excluded_paths]
        if not kept:
            raise DataError(
                f"{folder}: every clip is already used for calibration; evaluate on another folder (--eval-data) "
                "or calibrate on fewer clips (--calibration-clips)"
            )
        excluded, entries = len(entries) - len(kept), kept
        order = np.random.default_rng(seed).permutation(len(entries))
        max_samples = int(max_seconds * SAMPLE_RATE)
        clips, labels, paths = [], [], []
        for index in order:
            if len(clips) == limit:
                break
            path, label = entries[index]
            try:
                clips.append(load_audio(path)[:max_samples])  # any rate: resampled to 16 kHz
            except AudioError as e:
                log.warning("skipping %s: %s", path, e)
                continue
            labels.append(label)
            paths.append(path)
        if not clips:
            raise DataError(f"{folder}: none of its audio files could be decoded")
        return cls(folder, tuple(clips), tuple(labels), seed, tuple(paths), excluded)

    @property
    def labelled(self) -> bool:
        return all(label is not None for label in self.labels)

    def label_indices(self, labels: tuple[str, ...] = LABELS) -> np.ndarray:
        """The clips' labels as indices into a model's `labels` (-1: the model has no such label; see
        ser.labels.truth_indices); raises if the folder is unlabelled."""
        if not self.labelled:
            raise DataError(f"{self.folder}: clips carry no labels (use one subfolder per emotion)")
        return np.array(truth_indices(self.labels, labels), dtype=np.int64)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self) -> Iterator[Feeds]:
        """One feed dict per clip, batch 1: {"audio": [1, samples] float32, "lengths": [1] int64}."""
        for clip in self.clips:
            yield {"audio": clip[None, :], "lengths": np.array([len(clip)], dtype=np.int64)}

    def onnxruntime_reader(
        self, on_feed: Callable[[], None] | None = None, equal_lengths: bool = False
    ) -> CalibrationDataReader:
        """ONNX Runtime's single-pass reader over these clips; `on_feed` is called per clip (progress).
        `equal_lengths` cuts every clip to the shortest one's length: ONNX Runtime's histogram calibrators
        (entropy, percentile) stack each tensor's values over all clips and fail on clips of different lengths."""
        reader = self
        if equal_lengths:
            shortest = min(len(clip) for clip in self.clips)
            reader = dataclasses.replace(self, clips=tuple(clip[:shortest] for clip in self.clips))
        return _OnnxRuntimeReader(reader, on_feed)


class _OnnxRuntimeReader(CalibrationDataReader):
    def __init__(self, reader: AudioFolderReader, on_feed: Callable[[], None] | None):
        self._reader = reader
        self._on_feed = on_feed
        self._feeds = iter(reader)

    def get_next(self) -> Feeds | None:
        feeds = next(self._feeds, None)
        if feeds is not None and self._on_feed is not None:
            self._on_feed()
        return feeds

    def rewind(self) -> None:
        self._feeds = iter(self._reader)

    def __len__(self) -> int:
        return len(self._reader)
