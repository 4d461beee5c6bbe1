"""The tensors a ser model takes and gives over the Open Inference Protocol (KServe v2, Triton's HTTP/gRPC
API), so one client talks to ser-serve's /v2 endpoints and to Triton's Python backend alike.

Inputs (batch first; give AUDIO_FILE, or AUDIO with optional LENGTHS):
  AUDIO_FILE  BYTES [batch, 1]        encoded audio files (wav, flac, ogg, mp3), any rate and channels
  AUDIO       FP32  [batch, samples]  16 kHz mono samples, right-padded
  LENGTHS     INT64 [batch, 1]        valid samples per row of AUDIO (default: all)
Outputs, by what the bundle answers (its manifest's `answer`):
  LABEL       BYTES [batch, 1]           categories: the most likely label, as the model names it
  SCORES      FP32  [batch, labels]      categories: every label's probability, in the bundle's label order
  DIMENSIONS  FP32  [batch, dimensions]  dimensions: each value (e.g. arousal, dominance, valence), in order
  EMBEDDING   FP32  [batch, width]       the pooled embedding, where the bundle was exported with one
The names of the labels or dimensions are in the model metadata's parameters.

numpy and ser's audio decoding only: the Triton model imports this inside Triton's Python stub.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

import numpy as np

from ser.answer import AnswerSpec, Prediction
from ser.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, load_audio

AUDIO_FILE, AUDIO, LENGTHS = "AUDIO_FILE", "AUDIO", "LENGTHS"
LABEL, SCORES, DIMENSIONS, EMBEDDING = "LABEL", "SCORES", "DIMENSIONS", "EMBEDDING"
INPUTS = (
    {"name": AUDIO_FILE, "datatype": "BYTES", "shape": [-1, 1]},
    {"name": AUDIO, "datatype": "FP32", "shape": [-1, -1]},
    {"name": LENGTHS, "datatype": "INT64", "shape": [-1, 1]},
)


def outputs_metadata(answer: AnswerSpec, embedding_size: int | None = None) -> list[dict]:
    """The output tensors a bundle that answers `answer` gives (and EMBEDDING, `embedding_size` wide)."""
    if answer.is_categorical:
        outputs = [
            {"name": LABEL, "datatype": "BYTES", "shape": [-1, 1]},
            {"name": SCORES, "datatype": "FP32", "shape": [-1, len(answer.names)]},
        ]
    else:
        outputs = [{"name": DIMENSIONS, "datatype": "FP32", "shape": [-1, len(answer.names)]}]
    if embedding_size is not None:
        outputs.append({"name": EMBEDDING, "datatype": "FP32", "shape": [-1, embedding_size]})
    return outputs


def clips_from_tensors(tensors: Mapping[str, np.ndarray], max_seconds: float | None = None) -> list[np.ndarray]:
    """The request's clips, decoded and checked: float32 mono at 16 kHz. Raises AudioError naming the row."""
    return [decode() for decode in clip_decoders(tensors, max_seconds)]


def clip_decoders(
    tensors: Mapping[str, np.ndarray], max_seconds: float | None = None
) -> list[Callable[[], np.ndarray]]:
    """For each of the request's clips, the call that decodes and checks it (raising AudioError naming
    the row), so a server can run it where it likes; the request's layout is checked at once."""
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
            partial(load_audio, _as_bytes(f), name=f"{AUDIO_FILE}[{i}]", max_seconds=max_seconds)
            for i, f in enumerate(files)
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
    decoders = []
    for i, (row, n) in enumerate(zip(audio, lengths, strict=True)):
        if not MIN_SAMPLES <= n <= audio.shape[1]:
            raise AudioError(
                f"{LENGTHS}[{i}] = {n}: must be between {MIN_SAMPLES} and the {audio.shape[1]} samples given"
            )
        # load_audio checks what a file would be checked for: finite samples, the duration limit
        decoders.append(partial(load_audio, row[: int(n)].astype(np.float32), SAMPLE_RATE, name=f"{AUDIO}[{i}]",
                                max_seconds=max_seconds))  # fmt: skip
    return decoders


def output_tensors(predictions: Sequence[Prediction], answer: AnswerSpec) -> dict[str, np.ndarray]:
    """The output tensors of `predictions` (outputs_metadata names them), values in `answer`'s name order."""
    values = np.array([[p.values[name] for name in answer.names] for p in predictions], dtype=np.float32)
    values = values.reshape(len(predictions), len(answer.names))
    tensors = (
        {LABEL: np.array([[str(p.label).encode()] for p in predictions], dtype=object), SCORES: values}
        if answer.is_categorical
        else {DIMENSIONS: values}
    )
    if predictions and predictions[0].embedding is not None:
        tensors[EMBEDDING] = np.stack([p.embedding for p in predictions]).astype(np.float32)
    return tensors


def _as_bytes(value: object) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, np.ndarray):
        return value.tobytes()
    if isinstance(value, str):  # JSON carries BYTES as text; only the binary extension carries files intact
        return value.encode("latin-1", errors="replace")
    raise AudioError(f"{AUDIO_FILE}: expected bytes, got {type(value).__name__}")
