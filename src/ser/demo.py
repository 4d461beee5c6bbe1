"""`make demo`: export all four models at tiny size and answer a few generated clips with each.

Until `ser-train` lands the tiny models carry random weights: the demo shows the pipeline working
end to end (export, validation, decoding four formats, batched inference), not meaningful emotions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ser.audio import SAMPLE_RATE
from ser.export import ExportOptions, export_bundle
from ser.export.validate import validation_clip
from ser.models import REGISTRY
from ser.runtime import EmotionRecognizer, Prediction

log = logging.getLogger(__name__)


def write_demo_clips(folder: Path) -> list[Path]:
    """Three seconds of speech-like signal in each format and layout the runtime must take."""
    folder.mkdir(parents=True, exist_ok=True)
    clip = validation_clip(3 * SAMPLE_RATE, seed=7)
    stereo = np.stack([clip, 0.8 * clip], axis=1)
    files = [
        (folder / "mono-16k.wav", clip, SAMPLE_RATE),
        (folder / "stereo-44k.flac", soxr.resample(stereo, SAMPLE_RATE, 44_100), 44_100),
        (folder / "mono-22k.ogg", soxr.resample(clip, SAMPLE_RATE, 22_050), 22_050),
        (folder / "mono-24k.mp3", soxr.resample(clip, SAMPLE_RATE, 24_000), 24_000),
    ]
    for path, samples, rate in files:
        sf.write(path, samples, rate)
    return [path for path, _, _ in files]


def run_demo(out: Path) -> dict[str, list[tuple[Path, Prediction]]]:
    clips = write_demo_clips(out / "clips")
    answers = {}
    for name in REGISTRY:
        bundle = export_bundle(
            ExportOptions(name, size="tiny", random_init=True), out / "bundles" / name, overwrite=True
        )
        with EmotionRecognizer.load(bundle) as recognizer:
            answers[name] = list(zip(clips, recognizer.predict_batch(clips), strict=True))
    return answers
