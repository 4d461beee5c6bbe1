"""Decode, mix down and resample audio to what every model takes: mono float32 at 16 kHz.

numpy, soundfile and soxr only, so the runtime can use it without torch.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000  # Hz, what every exported graph expects
MIN_SAMPLES = 400  # 25 ms: the wav2vec2 family's convolutional receptive field

AudioInput = str | Path | bytes | np.ndarray


class AudioError(ValueError):
    """Audio that cannot be used: the message names the source and the reason."""


def load_audio(source: AudioInput, sample_rate: int | None = None, *, name: str | None = None) -> np.ndarray:
    """Return `source` as mono float32 samples at SAMPLE_RATE, shape [samples].

    `source` is a file path, the bytes of an encoded file (wav, flac, ogg, mp3), or an array of
    samples ([samples] or [samples, channels]) whose `sample_rate` must then be given.
    `name` is how errors refer to the source (defaults to the path, or "<bytes>"/"<array>").
    """
    if isinstance(source, np.ndarray):
        name = name or "<array>"
        if sample_rate is None:
            raise AudioError(f"{name}: an array of samples needs its sample_rate")
        samples, rate = _check_array(source, name), sample_rate
    else:
        if isinstance(source, (bytes, bytearray)):
            name, data = name or "<bytes>", bytes(source)
        else:
            name = name or str(source)
            data = _read_file(Path(source), name)
        samples, rate = _decode(data, name)
        if sample_rate is not None and sample_rate != rate:
            raise AudioError(f"{name}: the file says {rate} Hz but sample_rate={sample_rate} was given")
    return _finish(samples, rate, name)


def _read_file(path: Path, name: str) -> bytes:
    if not path.exists():
        raise AudioError(f"{name}: no such file")
    if not path.is_file():
        raise AudioError(f"{name}: not a regular file")
    return path.read_bytes()


def _decode(data: bytes, name: str) -> tuple[np.ndarray, int]:
    if not data:
        raise AudioError(f"{name}: the file is empty (0 bytes)")
    _check_wav_complete(data, name)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            declared, rate = f.frames, f.samplerate
            samples = f.read(dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        raise AudioError(f"{name}: not readable audio (wav, flac, ogg or mp3): {e.error_string}") from None
    except (RuntimeError, TypeError) as e:  # soundfile's other decode failures
        raise AudioError(f"{name}: not readable audio (wav, flac, ogg or mp3): {e}") from None
    if len(samples) < declared:
        raise AudioError(f"{name}: truncated: the header promises {declared} frames, the file holds {len(samples)}")
    return samples, rate


def _check_wav_complete(data: bytes, name: str) -> None:
    """libsndfile silently shortens a WAV whose data chunk is cut off; refuse it instead."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk == b"data":
            available = len(data) - pos - 8
            # 0 and 0xFFFFFFFF mark streamed WAVs whose writer never filled in the size.
            if size not in (0, 0xFFFFFFFF) and available < size:
                raise AudioError(
                    f"{name}: truncated: the WAV data chunk declares {size} bytes, the file holds {available}"
                )
            return
        pos += 8 + size + (size & 1)


def _check_array(samples: np.ndarray, name: str) -> np.ndarray:
    if samples.ndim not in (1, 2):
        raise AudioError(f"{name}: expected samples of shape [samples] or [samples, channels], got {samples.shape}")
    if samples.ndim == 2 and samples.shape[0] < samples.shape[1] and samples.shape[0] <= 8:
        raise AudioError(f"{name}: shape {samples.shape} looks like [channels, samples]; pass [samples, channels]")
    if not np.issubdtype(samples.dtype, np.floating) and not np.issubdtype(samples.dtype, np.integer):
        raise AudioError(f"{name}: expected numeric samples, got dtype {samples.dtype}")
    if np.issubdtype(samples.dtype, np.integer):  # PCM integers to [-1, 1)
        samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
    samples = samples[:, None] if samples.ndim == 1 else samples
    return samples.astype(np.float32, copy=False)


def _finish(samples: np.ndarray, rate: int, name: str) -> np.ndarray:
    """[samples, channels] at `rate` → checked mono float32 at SAMPLE_RATE."""
    if rate <= 0:
        raise AudioError(f"{name}: sample rate must be positive, got {rate}")
    if samples.size == 0:
        raise AudioError(f"{name}: zero length: no samples")
    if not np.isfinite(samples).all():
        bad = "NaN" if np.isnan(samples).any() else "Inf"
        raise AudioError(f"{name}: contains {bad} samples")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    if len(mono) < MIN_SAMPLES:
        raise AudioError(
            f"{name}: too short: {len(mono) / SAMPLE_RATE * 1000:.1f} ms, at least "
            f"{MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms is needed"
        )
    return np.ascontiguousarray(mono, dtype=np.float32)


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
