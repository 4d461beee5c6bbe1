"""A deterministic speech-like signal, for when the answer does not matter, only that the input is like
speech: export validation's clips, the benchmarks' timing inputs, the tests' generated audio."""

from __future__ import annotations

import numpy as np

from ser.audio import SAMPLE_RATE


def synthetic_voice(length: int, seed: int, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A deterministic speech-like test signal (a gliding harmonic tone with vibrato, in noise): what
    validation and benchmarks feed when the answer does not matter, only that the input is like speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / rate
    f0 = rng.uniform(90, 260) * (1 + 0.3 * t / max(t[-1], 1e-3)) * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
    clip = 0.3 * envelope * voice + 0.02 * rng.standard_normal(length)
    return clip.astype(np.float32)
