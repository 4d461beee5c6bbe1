"""The tensors a ser model takes and gives over the Open Inference Protocol (KServe v2, Triton's HTTP/gRPC
API), so one client talks to ser-serve's /v2 endpoints and to Triton's Python backend alike.

Inputs (batch first; give AUDIO_FILE, or AUDIO with optional LENGTHS):
  AUDIO_FILE  BYTES [batch, 1]        encoded audio files (wav, flac, ogg, mp3), any rate and channels
  AUDIO       FP32  [batch, samples]  16 kHz mono samples, right-padded
  LENGTHS     INT64 [batch, 1]        valid samples per row of AUDIO (default: all)
Outputs:
  LABEL       BYTES [batch, 1]        the most likely label, as the model names it
  SCORES      FP32  [batch, labels]   every label's probability, in the bundle's label order

numpy and ser's audio decoding only: the Triton model imports this inside Triton's Python stub.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ser.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, load_audio

AUDIO_FILE, AUDIO, LENGTHS = "AUDIO_FILE", "AUDIO", "LENGTHS"
LABEL, SCORES = "LABEL", "SCORES"
INPUTS = (
    {"name": AUDIO_FILE, "datatype": "BYTES", "shape": [-1, 1]},
    {"name": AUDIO, "datatype": "FP32", "shape": [-1, -1]},
    {"name": LENGTHS, "datatype": "INT64", "shape": [-1, 1]},
)


def outputs_metadata(num_labels: int) -> list[dict]:
    return [
        {"name": LABEL, "datatype": "BYTES", "shape": [-1, 1]},
        {"name": SCORES, "datatype": "FP32", "shape": [-1, num_labels]},
    ]


def clips_from_tensors(tensors: Mapping[str, np.ndarray], max_seconds: float | None = None) -> list[np.ndarray]:
    """The request's clips, decoded and checked: float32 mono at 16 kHz. Raises AudioError naming the row."""
    unknown = set(tensors) - {AUDIO_FILE, AUDIO, LENGTHS}
    if unknown:
        raise AudioError(f"unknown input {sorted(unknown)[0]!r}; inputs are {AUDIO_FILE}, or {AUDIO} with {LENGTHS}")
    if AUDIO_FILE in tensors:
        if AUDIO in tensors or LENGTHS in tensors:
            raise AudioError(f"give {AUDIO_FILE}, or {AUDIO} with {LENGTHS}, not both")
        files = np.asarray(tensors[AUDIO_FILE], dtype=object).reshape(-1)
        if files.size == 0:
            raise AudioError(f"{AUDIO_FILE}: no files")
        return [
            load_audio(_as_bytes(f), name=f"{AUDIO_FILE}[{i}]", max_seconds=max_seconds) for i, f in enumerate(files)
        ]
    if AUDIO not in tensors:
        raise AudioError(f"no audio: give {AUDIO_FILE} (encoded files) or {AUDIO} (16 kHz samples)")
    audio = np.asarray(tensors[AUDIO])
    if audio.ndim != 2 or audio.shape[0] == 0:
        raise AudioError(f"{AUDIO}: expected shape [batch, samples], got {list(audio.shape)}")
    if LENGTHS in tensors:
        lengths = np.asarray(tensors[LENGTHS]).reshape(-1)
        if lengths.shape[0] != audio.shape[0]:
            raise AudioError(f"{LENGTHS}: {lengths.shape[0]} lengths for {audio.shape[0]} rows of {AUDIO}")
    else:
        lengths = np.full(audio.shape[0], audio.shape[1])
    clips = []
    for i, (row, n) in enumerate(zip(audio, lengths, strict=True)):
        if not MIN_SAMPLES <= n <= audio.shape[1]:
            raise AudioError(
                f"{LENGTHS}[{i}] = {n}: must be between {MIN_SAMPLES} and the {audio.shape[1]} samples given"
            )
        # load_audio checks what a file would be checked for: finite samples, the duration limit
        clips.append(load_audio(row[: int(n)].astype(np.float32), SAMPLE_RATE, name=f"{AUDIO}[{i}]",
                                max_seconds=max_seconds))  # fmt: skip
    return clips


def output_tensors(labels: Sequence[str], scores: Sequence[Mapping[str, float]], names: Sequence[str]) -> dict:
    """LABEL and SCORES for predictions given as their labels and score maps; `names` is the label order."""
    return {
        LABEL: np.array([[label.encode()] for label in labels], dtype=object),
        SCORES: np.array([[s[name] for name in names] for s in scores], dtype=np.float32).reshape(len(scores), -1),
    }


def _as_bytes(value: object) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, np.ndarray):
        return value.tobytes()
    if isinstance(value, str):  # JSON carries BYTES as text; only the binary extension carries files intact
        return value.encode("latin-1", errors="replace")
    raise AudioError(f"{AUDIO_FILE}: expected bytes, got {type(value).__name__}")
