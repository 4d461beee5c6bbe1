"""Labelled audio on disk: the folder-per-emotion layout or a CSV manifest, checks, and a stratified split.

numpy and soundfile only, so `ser-data check` runs without torch.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from ser.audio import SAMPLE_RATE, AudioError, load_audio
from ser.labels import LABELS, label_from_name
from ser.staging import write_atomic

log = logging.getLogger(__name__)
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif"})


class DataError(ValueError):
    """A dataset that cannot be read as a whole: the message names the path and the fix."""


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str


@dataclass(frozen=True)
class Corpus:
    """Labelled clips under `root` (a folder, or the folder a CSV manifest sits in)."""

    root: Path
    clips: tuple[Clip, ...]
    ignored: tuple[str, ...] = ()  # folders or CSV rows that name no known label, as "where: why"

    @classmethod
    def from_path(cls, path: str | Path) -> Corpus:
        """A folder with one subfolder per emotion (`Angry/`, `sad/`, `ANG/`, ...; audio found at any
        depth below each), or a CSV file with `path` and `label` columns (paths relative to it)."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: no such folder or CSV file")
        corpus = cls._from_csv(path) if path.is_file() else cls._from_folders(path)
        if not corpus.clips:
            raise DataError(f"{path}: no audio clips found ({', '.join(sorted(AUDIO_EXTENSIONS))})")
        return corpus

    @classmethod
    def _from_folders(cls, root: Path) -> Corpus:
        clips, ignored = [], []
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            label = label_from_name(folder.name)
            if label is None:
                ignored.append(f"{folder.name}/: not an emotion name")
                continue
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            clips += [Clip(p, label) for p in files]
        if not clips and not any(label_from_name(p.name) for p in root.iterdir() if p.is_dir()):
            raise DataError(
                f"{root}: no emotion folders; expected subfolders named for {', '.join(LABELS)} "
                "(any case, common synonyms), or pass a CSV manifest with path,label columns"
            )
        return cls(root, tuple(clips), tuple(ignored))

    @classmethod
    def _from_csv(cls, manifest: Path) -> Corpus:
        root = manifest.parent
        with manifest.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = {name.strip().lower(): name for name in reader.fieldnames or ()}
            if "path" not in columns or "label" not in columns:
                raise DataError(f"{manifest}: needs a header with path and label columns, found {reader.fieldnames}")
            clips, ignored = [], []
            for row_number, row in enumerate(reader, start=2):
                raw_label = (row[columns["label"]] or "").strip()
                label = label_from_name(raw_label)
                if label is None:
                    ignored.append(f"{manifest.name}:{row_number}: unknown label {raw_label!r}")
                    continue
                clips.append(Clip(root / row[columns["path"]].strip(), label))
        return cls(root, tuple(clips), tuple(ignored))

    def counts(self) -> dict[str, int]:
        counter = Counter(clip.label for clip in self.clips)
        return {label: counter.get(label, 0) for label in LABELS}

    def without(self, paths: set[Path]) -> Corpus:
        return Corpus(self.root, tuple(c for c in self.clips if c.path not in paths), self.ignored)


@dataclass(frozen=True)
class CorpusReport:
    """What `ser-data check` prints: counts, durations (seconds) and sample rates of readable clips."""

    counts: dict[str, int]
    durations: dict[str, float]  # min, median, mean, max, total
    sample_rates: dict[int, int]  # Hz → clips
    unreadable: tuple[tuple[Path, str], ...]  # (file, why); skipped, never fatal
    ignored: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "counts": self.counts,
            "durations_s": self.durations,
            "sample_rates": {str(k): v for k, v in self.sample_rates.items()},
            "unreadable": [{"path": str(p), "reason": r} for p, r in self.unreadable],
            "ignored": list(self.ignored),
        }


def check_corpus(corpus: Corpus, progress=None) -> CorpusReport:
    """Decode every clip as training will, and summarise; `progress()` is called once per clip."""
    durations: list[float] = []
    rates: Counter[int] = Counter()
    counts: Counter[str] = Counter()
    unreadable = []
    for clip in corpus.clips:
        try:
            samples = load_audio(clip.path)
            rates[sf.info(str(clip.path)).samplerate] += 1
        except (AudioError, RuntimeError, OSError) as e:  # soundfile raises RuntimeError subclasses
            unreadable.append((clip.path, str(e).removeprefix(f"{clip.path}: ")))
        else:
            durations.append(len(samples) / SAMPLE_RATE)
            counts[clip.label] += 1
        if progress is not None:
            progress()
    summary = (
        {
            "min": min(durations),
            "median": statistics.median(durations),
            "mean": statistics.fmean(durations),
            "max": max(durations),
            "total": sum(durations),
        }
        if durations
        else {}
    )
    return CorpusReport(
        counts={label: counts.get(label, 0) for label in LABELS},
        durations=summary,
        sample_rates=dict(sorted(rates.items())),
        unreadable=tuple(unreadable),
        ignored=corpus.ignored,
    )


def drop_unreadable(corpus: Corpus) -> Corpus:
    """The corpus without the clips that do not decode, each logged as skipped."""
    report = check_corpus(corpus)
    for path, reason in report.unreadable:
        log.warning("skipping %s: %s", path, reason)
    return corpus.without({path for path, _ in report.unreadable})


@dataclass(frozen=True)
class Split:
    """Train / validation / test clips, stratified by label; saved with a run so it can be replayed."""

    seed: int
    train: tuple[Clip, ...]
    val: tuple[Clip, ...]
    test: tuple[Clip, ...]
    fractions: dict[str, float] = field(default_factory=dict)
    fingerprint: str | None = None  # corpus_fingerprint of the corpus it was cut from

    def save(self, path: Path, root: Path) -> None:
        def rows(clips: tuple[Clip, ...]) -> list[list[str]]:
            return [[os.path.relpath(c.path, root), c.label] for c in clips]

        data = {"seed": self.seed, "fractions": self.fractions, "root": str(root.resolve())}
        data["fingerprint"] = self.fingerprint
        data |= {"train": rows(self.train), "val": rows(self.val), "test": rows(self.test)}
        write_atomic(path, json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: Path, root: Path) -> Split:
        data = json.loads(path.read_text())

        def clips(rows: list[list[str]]) -> tuple[Clip, ...]:
            return tuple(Clip(root / p, label) for p, label in rows)

        return cls(
            data["seed"],
            clips(data["train"]),
            clips(data["val"]),
            clips(data["test"]),
            data["fractions"],
            data.get("fingerprint"),
        )


def corpus_fingerprint(corpus: Corpus) -> str:
    """sha256 over every clip's path (relative to the corpus root), label and size: what a resumed run checks
    to be sure it goes on with the data it started on (a moved copy of it has the same fingerprint)."""
    digest = hashlib.sha256()
    for clip in sorted(corpus.clips, key=lambda c: str(c.path)):
        try:
            size = clip.path.stat().st_size
        except OSError:
            size = -1
        digest.update(f"{os.path.relpath(clip.path, corpus.root)}\t{clip.label}\t{size}\n".encode())
    return digest.hexdigest()


def split_corpus(corpus: Corpus, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """Shuffle each label's clips with `seed` and cut them by the fractions, so every part keeps the
    corpus's class balance. A label with at least three clips has at least one in each part."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"val and test fractions must be in (0, 1) and sum below 1: {val_fraction}, {test_fraction}")
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for label in LABELS:
        clips = sorted((c for c in corpus.clips if c.label == label), key=lambda c: str(c.path))
        order = rng.permutation(len(clips))
        clips = [clips[i] for i in order]
        n_test = max(round(len(clips) * test_fraction), 1 if len(clips) >= 3 else 0)
        n_val = max(round(len(clips) * val_fraction), 1 if len(clips) >= 3 else 0)
        test += clips[:n_test]
        val += clips[n_test : n_test + n_val]
        train += clips[n_test + n_val :]
    fractions = {"val": val_fraction, "test": test_fraction}
    return Split(seed, tuple(train), tuple(val), tuple(test), fractions)


@dataclass(frozen=True)
class RatedClip:
    """A clip with its rated dimensions (e.g. MSP-Podcast's arousal, dominance, valence), in the model's order."""

    path: Path
    values: tuple[float, ...]


def read_ratings(manifest: str | Path, dimensions: tuple[str, ...]) -> tuple[RatedClip, ...]:
    """A CSV with a `path` column and one column per dimension (`path,arousal,dominance,valence`; paths
    relative to the CSV). A row whose value is missing or not a finite number is refused with its line."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"{manifest}: a dimensional evaluation needs a CSV with path,{','.join(dimensions)} columns")
    with manifest.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = {name.strip().lower(): name for name in reader.fieldnames or ()}
        wanted = ("path", *(d.lower() for d in dimensions))
        if any(name not in columns for name in wanted):
            raise DataError(f"{manifest}: needs a header with {', '.join(wanted)} columns, found {reader.fieldnames}")
        clips = []
        for row_number, row in enumerate(reader, start=2):
            try:
                values = tuple(float(row[columns[d.lower()]]) for d in dimensions)
            except (TypeError, ValueError):
                values = ()
            if len(values) != len(dimensions) or not all(math.isfinite(v) for v in values):
                raise DataError(f"{manifest}:{row_number}: every one of {', '.join(dimensions)} must be a number")
            clips.append(RatedClip(manifest.parent / row[columns["path"]].strip(), values))
    if not clips:
        raise DataError(f"{manifest}: no rows")
    return tuple(clips)
