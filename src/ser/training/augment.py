"""Training-time augmentation with audiomentations: pitch shift, noise at a chosen SNR, gain, time shift.

Each is applied with its own probability, so a model also sees clean clips. Gain matters only to
models that do not normalise the waveform (ResNet18, WavLM); the others undo it in their graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ser.audio import SAMPLE_RATE


@dataclass(frozen=True)
class AugmentOptions:
    pitch_semitones: float = 2.0  # shift drawn from ±this; 0 turns it off
    snr_db: tuple[float, float] = (15.0, 40.0)  # additive Gaussian noise, signal-to-noise ratio range
    gain_db: float = 6.0  # ±dB
    shift_seconds: float = 0.25  # ±seconds; the clip moves and silence fills the gap
    probability: float = 0.5  # of each transform, independently


def build_augment(options: AugmentOptions, sample_rate: int = SAMPLE_RATE) -> Callable[[np.ndarray], np.ndarray]:
    """A function float32 [samples] → float32 [samples] (same length), random on every call."""
    from audiomentations import AddGaussianSNR, Compose, Gain, PitchShift, Shift

    p = options.probability
    transforms = []
    if options.pitch_semitones > 0:
        transforms.append(PitchShift(-options.pitch_semitones, options.pitch_semitones, p=p))
    if options.snr_db[1] > 0:
        transforms.append(AddGaussianSNR(*options.snr_db, p=p))
    if options.gain_db > 0:
        transforms.append(Gain(-options.gain_db, options.gain_db, p=p))
    if options.shift_seconds > 0:
        s = options.shift_seconds
        transforms.append(Shift(-s, s, shift_unit="seconds", rollover=False, p=p))
    compose = Compose(transforms)

    def augment(samples: np.ndarray) -> np.ndarray:
        out = compose(samples=samples.astype(np.float32, copy=False), sample_rate=sample_rate)
        return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)

    return augment
