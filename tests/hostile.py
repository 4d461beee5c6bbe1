"""Hostile audio, made from real files with their headers rewritten: what an attacker would upload. Shared by
the tests and by benchmarks/hostile_soak.py."""

import io
import struct

import numpy as np
import soundfile as sf

from ser.audio import SAMPLE_RATE
from ser.data.signals import synthetic_voice


def wav_claiming_rate(rate: int, seconds: float = 1.0) -> bytes:
    """A real 16-bit WAV whose header has been rewritten to claim `rate` Hz (and the matching byte rate)."""
    buffer = io.BytesIO()
    sf.write(buffer, synthetic_voice(int(seconds * SAMPLE_RATE), seed=0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    fmt = data.index(b"fmt ")
    channels, = struct.unpack("<H", data[fmt + 10 : fmt + 12])  # fmt: skip
    data[fmt + 12 : fmt + 16] = struct.pack("<I", rate)
    data[fmt + 16 : fmt + 20] = struct.pack("<I", rate * 2 * channels)
    return bytes(data)


def flac_claiming_frames(frames: int, seconds: float = 0.5) -> bytes:
    """A real FLAC file whose STREAMINFO has been rewritten to claim `frames` samples (36 bits at most)."""
    buffer = io.BytesIO()
    sf.write(buffer, synthetic_voice(int(seconds * SAMPLE_RATE), seed=0), SAMPLE_RATE, format="FLAC")
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    packed = int.from_bytes(data[18:26], "big")  # rate (20 bits), channels, bits per sample, total samples (36)
    packed = (packed & ~((1 << 36) - 1)) | frames
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def float_wav(value: float, rate: int = SAMPLE_RATE, channels: int = 2, seconds: float = 0.5) -> bytes:
    """A float32 WAV whose every sample is ±`value` (alternating sign): finite, but near float32's limit."""
    n = int(seconds * rate)
    samples = np.tile(np.where(np.arange(n) % 2, value, -value).astype(np.float32)[:, None], (1, channels))
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()
