"""What decoding one upload costs: `load_audio` on the bytes of a file as shipped (16-bit WAVs through the standard
library's wave module) against the same call with that path switched off (every format through libsndfile, as
before), in one run on this machine. Both include ser's checks, the mix to mono and any resampling.

    python benchmarks/decode_speed.py [--repeats 2000] [--out benchmarks/results/decode_speed.json]

Each clip is synthetic speech written by soundfile; each figure is the median of as many calls (µs), the two
ways alternating. The samples of both ways are checked to be the same first.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from ser import audio
from ser.audio import load_audio
from ser.bench.environment import cpu_info
from ser.data.signals import synthetic_voice

CLIPS = [  # (name, seconds, rate, channels, format, subtype)
    ("2 s, 16 kHz mono, 16-bit WAV (the OIP request in triton_vs_serve)", 2, 16_000, 1, "WAV", "PCM_16"),
    ("10 s, 44.1 kHz stereo, 16-bit WAV", 10, 44_100, 2, "WAV", "PCM_16"),
    ("60 s, 16 kHz mono, 16-bit WAV", 60, 16_000, 1, "WAV", "PCM_16"),
    ("2 s, 16 kHz mono, float WAV (not on the fast path)", 2, 16_000, 1, "WAV", "FLOAT"),
    ("2 s, 16 kHz mono, FLAC (not on the fast path)", 2, 16_000, 1, "FLAC", "PCM_16"),
]


def encoded(seconds: int, rate: int, channels: int, format: str, subtype: str) -> bytes:
    mono = synthetic_voice(seconds * rate, seed=1)
    samples = mono if channels == 1 else np.stack([mono, 0.5 * mono], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=format, subtype=subtype)
    return buffer.getvalue()


def through_libsndfile(data: bytes) -> np.ndarray:
    """`load_audio` with the wave path switched off: what it was before."""
    fast_path = audio._read_pcm16_wav
    audio._read_pcm16_wav = lambda *args: None
    try:
        return load_audio(data)
    finally:
        audio._read_pcm16_wav = fast_path


def median_us(calls: dict, data: bytes, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call(data)
            times[name].append(time.perf_counter() - started)
    return {name: round(statistics.median(t) * 1e6, 1) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for name, seconds, rate, channels, format, subtype in CLIPS:
        data = encoded(seconds, rate, channels, format, subtype)
        np.testing.assert_array_equal(load_audio(data), through_libsndfile(data))
        repeats = max(20, args.repeats * 2 // seconds // channels)
        us = median_us({"shipped": load_audio, "libsndfile": through_libsndfile}, data, repeats)
        rows.append({"clip": name, "bytes": len(data), "repeats": repeats, **{f"{k}_us": v for k, v in us.items()}})
        print(f"{name}: load_audio {us['shipped']:,.1f} µs; through libsndfile {us['libsndfile']:,.1f} µs")
    if args.out:
        args.out.write_text(json.dumps({"machine": cpu_info(), "clips": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
