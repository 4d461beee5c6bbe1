"""Decode, mix down and resample audio to what every model takes: mono float32 at 16 kHz.

numpy, soundfile and soxr only (and the standard library's wave), so the runtime can use it without torch.
"""

from __future__ import annotations

import io
import os
import struct
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000  # Hz, what every exported graph expects
MIN_SAMPLES = 400  # 25 ms: the wav2vec2 family's convolutional receptive field
# Rates a recording can plausibly have. Outside them a header is lying or broken, and resampling from
# 1 Hz would turn a 32 KB upload into gigabytes of samples.
MIN_RATE, MAX_RATE = 4_000, 384_000
# The most decoded samples (all channels, float32) one call will hold: 2 GiB, whatever a header claims.
MAX_DECODED_BYTES = 2 << 30
_BLOCK_FRAMES = 1 << 20  # decode in blocks, so a header that overstates its length costs no memory

AudioInput = str | Path | bytes | np.ndarray


class AudioError(ValueError):
    """Audio that cannot be used: the message names the source and the reason."""


def load_audio(
    source: AudioInput,
    sample_rate: int | None = None,
    *,
    name: str | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Return `source` as mono float32 samples at SAMPLE_RATE, shape [samples].

    `source` is a file path, the bytes of an encoded file (wav, flac, ogg, mp3), or an array of
    samples ([samples] or [samples, channels]) whose `sample_rate` must then be given.
    `name` is how errors refer to the source (defaults to the path, or "<bytes>"/"<array>").
    `max_seconds` refuses longer audio from its header, before anything is decoded; the rate must be
    within MIN_RATE..MAX_RATE and the decoded samples within MAX_DECODED_BYTES in any case.
    """
    if isinstance(source, np.ndarray):
        name = name or "<array>"
        if sample_rate is None:
            raise AudioError(f"{name}: an array of samples needs its sample_rate")
        samples = _check_array(source, name)
        _check_header(len(samples), sample_rate, samples.shape[1], name, max_seconds)
        rate = sample_rate
    elif isinstance(source, (bytes, bytearray)):
        name = name or "<bytes>"
        if not source:
            raise AudioError(f"{name}: the file is empty (0 bytes)")
        samples, rate = _decode(io.BytesIO(bytes(source)), name, max_seconds)
    else:
        name = name or str(source)
        with _open_file(Path(source), name) as f:
            samples, rate = _decode(f, name, max_seconds)
    if sample_rate is not None and not isinstance(source, np.ndarray) and sample_rate != rate:
        raise AudioError(f"{name}: the file says {rate} Hz but sample_rate={sample_rate} was given")
    return _finish(samples, rate, name)


def _open_file(path: Path, name: str) -> BinaryIO:
    if not path.exists():
        raise AudioError(f"{name}: no such file")
    if not path.is_file():
        raise AudioError(f"{name}: not a regular file")
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the caller's with-block
    except OSError as e:  # permission denied, I/O error: this file's problem, not the caller's
        raise AudioError(f"{name}: cannot be read: {e.strerror or e}") from None
    if os.fstat(f.fileno()).st_size == 0:
        f.close()
        raise AudioError(f"{name}: the file is empty (0 bytes)")
    return f


def _check_header(frames: int, rate: int, channels: int, name: str, max_seconds: float | None) -> int:
    """Refuse, from what the header (or array) says alone, audio that is implausible or over the limits.
    Returns the most frames the limits allow (for decoders that cannot count frames up front)."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{name}: a sample rate of {rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
    if channels < 1:
        raise AudioError(f"{name}: {channels} channels")
    allowed = MAX_DECODED_BYTES // (4 * channels)
    if max_seconds is not None:
        allowed = min(allowed, int(max_seconds * rate))
    seconds = frames / rate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"{name}: {seconds:.1f} s of audio is over the limit of {max_seconds:g} s")
    if frames > allowed:
        raise AudioError(
            f"{name}: {frames} frames × {channels} channels would decode to more than "
            f"{MAX_DECODED_BYTES >> 30} GiB; split the recording"
        )
    return allowed


def _decode(f: BinaryIO, name: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    _check_wav_complete(f, name)
    pcm16 = _read_pcm16_wav(f, name, max_seconds)
    if pcm16 is not None:
        return pcm16
    try:
        with sf.SoundFile(f) as audio:
            declared, rate, channels = audio.frames, audio.samplerate, audio.channels
            allowed = _check_header(max(declared, 0), rate, channels, name, max_seconds)
            wanted = declared if declared > 0 else allowed + 1  # a stream of unknown length: up to the limit
            blocks, read = [], 0
            while read < wanted:
                block = audio.read(min(_BLOCK_FRAMES, wanted - read), dtype="float32", always_2d=True)
                if not len(block):
                    break
                blocks.append(block)
                read += len(block)
    except sf.LibsndfileError as e:
        raise AudioError(f"{name}: not readable audio (wav, flac, ogg or mp3): {e.error_string}") from None
    except (RuntimeError, TypeError) as e:  # soundfile's other decode failures
        raise AudioError(f"{name}: not readable audio (wav, flac, ogg or mp3): {e}") from None
    except MemoryError:
        raise AudioError(f"{name}: does not fit in memory once decoded") from None
    if declared > 0 and read < declared:
        raise AudioError(f"{name}: truncated: the header promises {declared} frames, the file holds {read}")
    if read > allowed:
        raise AudioError(f"{name}: longer than the limit of {allowed / rate:g} s")
    if not blocks:
        return np.zeros((0, channels), np.float32), rate
    return (np.concatenate(blocks) if len(blocks) > 1 else blocks[0]), rate


def _read_pcm16_wav(f: BinaryIO, name: str, max_seconds: float | None) -> tuple[np.ndarray, int] | None:
    """A 16-bit PCM WAV, what most clients upload, through the standard library's wave module: the same
    samples as libsndfile's (each integer / 32768), and `load_audio` of a 2 s clip in under a third of the time
    (benchmarks/decode_speed.py), which a server decoding every upload spends per request. None, for soundfile
    to read, for anything else: other encodings, a streamed WAV without its length, whatever wave refuses.
    Run after `_check_wav_complete`, so the data chunk holds what it declares."""
    head = f.read(36)
    f.seek(0)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    if head[12:16] == b"fmt " and head[20:22] + head[34:36] != b"\x01\x00\x10\x00":
        return None  # the usual first chunk says: not 16-bit PCM (float, 24-bit, extensible, ...)
    try:
        with wave.open(f) as reader:
            frames, channels, rate = reader.getnframes(), reader.getnchannels(), reader.getframerate()
            if reader.getsampwidth() != 2 or frames == 0 or frames * channels * 2 > 0xFFFFFFFF - channels * 2:
                return None  # not 16-bit, or a streamed WAV's length of 0 or 0xFFFFFFFF bytes
            _check_header(frames, rate, channels, name, max_seconds)
            data = reader.readframes(frames)
    except AudioError:
        raise
    except Exception:  # wave trips over a broken file in many ways (wave.Error, EOFError, RuntimeError, ...):
        return None  # soundfile judges it, as every file not read here
    finally:
        f.seek(0)
    if len(data) != frames * channels * 2:
        return None
    samples = np.frombuffer(data, dtype="<i2").reshape(-1, channels)
    return samples.astype(np.float32) * np.float32(1 / 32768), rate


def _check_wav_complete(f: BinaryIO, name: str) -> None:
    """libsndfile silently shortens a WAV whose data chunk is cut off; refuse it instead."""
    size_of_file = f.seek(0, io.SEEK_END)
    f.seek(0)
    head = f.read(12)
    try:
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size_of_file:
            f.seek(pos)
            header = f.read(8)
            chunk, size = header[:4], struct.unpack("<I", header[4:8])[0]
            if chunk == b"data":
                available = size_of_file - pos - 8
                # 0 and 0xFFFFFFFF mark streamed WAVs whose writer never filled in the size.
                if size not in (0, 0xFFFFFFFF) and available < size:
                    raise AudioError(
                        f"{name}: truncated: the WAV data chunk declares {size} bytes, the file holds {available}"
                    )
                return
            pos += 8 + size + (size & 1)
    finally:
        f.seek(0)


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
    """[samples, channels] at `rate` → checked mono float32 at SAMPLE_RATE; finite at every step, since
    float samples near ±3.4e38 are finite but overflow when mixed or resampled."""
    if samples.size == 0:
        raise AudioError(f"{name}: zero length: no samples")
    _check_finite(samples, name, "")
    # float64 sums: two channels near the float32 limit add up past it
    mono = samples.mean(axis=1, dtype=np.float64) if samples.shape[1] > 1 else samples[:, 0]
    mono = mono.astype(np.float32)
    _check_finite(mono, name, " once mixed to mono")
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
        _check_finite(mono, name, f" once resampled from {rate} Hz")
    if len(mono) < MIN_SAMPLES:
        raise AudioError(
            f"{name}: too short: {len(mono) / SAMPLE_RATE * 1000:.1f} ms, at least "
            f"{MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms is needed"
        )
    return np.ascontiguousarray(mono, dtype=np.float32)


def _check_finite(samples: np.ndarray, name: str, where: str) -> None:
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(samples).all():
            return
    bad = "NaN" if np.isnan(samples).any() else "Inf"
    raise AudioError(f"{name}: contains {bad} samples{where}")
