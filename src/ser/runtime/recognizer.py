"""EmotionRecognizer: load a bundle, answer emotions for audio. The face services embed."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ser.answer import AnswerSpec, Prediction, Timeline
from ser.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, AudioInput, load_audio
from ser.bundle import EMBEDDING, LOGITS, Bundle, BundleError
from ser.runtime.base import Backend, BackendError
from ser.runtime.cpu import cpu_features, int8_mismatch
from ser.runtime.onnxrt import OnnxRuntimeBackend, available_devices, device_problem
from ser.runtime.openvino import OpenVinoBackend
from ser.runtime.openvino import unavailable_reason as openvino_unavailable
from ser.runtime.tensorrt import TensorRTBackend, current_target, pick_engine, unavailable_reason
from ser.runtime.tuning import recorded_choice

log = logging.getLogger(__name__)
CHECK_SAMPLES = SAMPLE_RATE // 2  # the load-time graph check's clip: within every TensorRT profile (≥ 0.5 s)
# One name per way of running a bundle, the same in the runtime, the CLI, the bench suites and their workers:
# ONNX Runtime on one execution provider, OpenVINO on the CPU (the same graph), or the bundle's own TensorRT plan.
ONNXRUNTIME = {"onnxruntime-cpu": "cpu", "onnxruntime-cuda": "cuda", "onnxruntime-tensorrt": "tensorrt"}
OPENVINO = "openvino-cpu"
BACKENDS = ("auto", *ONNXRUNTIME, OPENVINO, "tensorrt")
# What an INT8 gate judged when its manifest does not say: ONNX Runtime's CPU kernels, the only ones it ran on.
GATED_BEFORE_RECORDED = ("onnxruntime-cpu",)


def window_bounds(
    n_samples: int, window_s: float, hop_s: float, max_windows: int | None = None
) -> list[tuple[int, int]]:
    """[start, end) sample ranges: `window_s` long, every `hop_s`, the last one ending at the audio's end.

    Equal-length windows batch without padding; a clip shorter than one window is one window. Raises
    ValueError for windows or hops that are not finite and positive, and, before building any, for more
    than `max_windows` windows.
    """
    if not (math.isfinite(window_s) and math.isfinite(hop_s)):
        raise ValueError(f"window {window_s} s and hop {hop_s} s must be finite numbers of seconds")
    window, hop = round(window_s * SAMPLE_RATE), round(hop_s * SAMPLE_RATE)
    if window < MIN_SAMPLES or hop < 1 or hop > window:
        raise ValueError(
            f"window {window_s} s and hop {hop_s} s: the window must be at least {MIN_SAMPLES / SAMPLE_RATE} s "
            f"and the hop between {1 / SAMPLE_RATE} s (one sample) and the window"
        )
    if n_samples <= window:
        return [(0, n_samples)]
    count = -(-(n_samples - window) // hop)  # starts 0, hop, ... below n - window
    ends_short = (count - 1) * hop + window < n_samples
    total = count + int(ends_short)
    if max_windows is not None and total > max_windows:
        raise ValueError(
            f"{n_samples / SAMPLE_RATE:.1f} s in {window_s} s windows every {hop_s} s makes {total} windows, "
            f"over the limit of {max_windows}; use a longer hop"
        )
    bounds = [(start, start + window) for start in range(0, n_samples - window, hop)]
    if bounds[-1][1] < n_samples:
        bounds.append((n_samples - window, n_samples))
    return bounds


def pad_batch(clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad clips with zeros to one [batch, samples] array; `lengths` keeps the valid counts."""
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    audio = np.zeros((len(clips), int(lengths.max())), dtype=np.float32)
    for row, clip in zip(audio, clips, strict=True):
        row[: len(clip)] = clip
    return audio, lengths


def backend_problem(backend: str) -> str | None:
    """Why `backend` cannot run on this machine, or None: the one availability check (a BackendError
    carries the same reason when the backend is opened anyway)."""
    if backend not in BACKENDS:
        return f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}"
    if backend == "tensorrt":
        return unavailable_reason()
    if backend == OPENVINO:
        return openvino_unavailable()
    return device_problem(ONNXRUNTIME[backend]) if backend in ONNXRUNTIME else None


def open_backend(bundle: Bundle, backend: str = "auto", threads: int | None = None) -> Backend:
    """The Backend that runs `bundle` (not yet activated): one of BACKENDS.

    `auto` takes the fastest this machine offers: the bundle's TensorRT plan when TensorRT is installed
    and the plan was built for this GPU and TensorRT version; else ONNX Runtime on CUDA when its CUDA
    provider really runs here (`device_problem`); else the CPU backend `ser tune` measured fastest among
    the verified ones on this kind of CPU (`ser.runtime.tuning`), or ONNX Runtime's where it has not run.
    Any other name runs exactly that, or fails with a BackendError saying why not (`threads`: CPU threads).
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "tensorrt" or (backend == "auto" and _native_tensorrt_runs(bundle)):
        return TensorRTBackend.from_bundle(bundle)
    if backend == "auto" and "cuda" not in available_devices():
        backend = recorded_choice(bundle) or "onnxruntime-cpu"
        if backend_problem(backend) is not None:  # tuned where OpenVINO was installed, and it is not here
            backend = "onnxruntime-cpu"
    if backend == OPENVINO:
        return OpenVinoBackend(bundle.onnx_path, bundle.manifest.inputs, threads)
    device = ONNXRUNTIME.get(backend) or "cuda"
    return OnnxRuntimeBackend(bundle.onnx_path, bundle.manifest.inputs, device=device, threads=threads)


def gate_backends(quantization: dict) -> tuple[str, ...]:
    """The backends an INT8 bundle's accuracy gate passed it on (empty for a bundle that is not INT8)."""
    if not quantization:
        return ()
    return tuple(quantization.get("gate_backends") or GATED_BEFORE_RECORDED)


def int8_problem(quantization: dict, backend: str) -> str | None:
    """Why an INT8 bundle's answers on `backend` (a CPU backend) may not be what its gate checked, or None:
    its gate never ran on that engine's kernels, or ran on a CPU whose INT8 numerics differ from this one's."""
    if not quantization or not backend.endswith("cpu"):
        return None
    judged = gate_backends(quantization)
    if backend not in judged:
        return (
            f"its INT8 accuracy gate judged {', '.join(judged)}, not {backend}, whose INT8 kernels compute otherwise; "
            f"run it on {judged[0]}, or re-export where {backend} is installed so the gate judges it too"
        )
    return int8_mismatch(quantization, cpu_features()) if quantization.get("cpu") else None


def _native_tensorrt_runs(bundle: Bundle) -> bool:
    if not bundle.manifest.engines or unavailable_reason() is not None:
        return False
    try:
        pick_engine(bundle.manifest.engines, current_target())
    except BackendError:
        return False
    return True


class EmotionRecognizer:
    """Answer the emotion in speech with an exported bundle — labels with probabilities, or named dimensions
    (arousal, dominance, valence), as its manifest declares; numpy and ONNX Runtime, no torch.

    >>> recognizer = EmotionRecognizer.load("bundles/wavlm")
    >>> recognizer.predict("call.wav").label
    'neutral'
    """

    def __init__(self, bundle: Bundle, backend: Backend, strict_cpu: bool = False):
        """`strict_cpu` refuses (BundleError) an INT8 bundle whose answers can differ on this CPU from what
        its accuracy gate checked; otherwise that is a warning, logged once and kept in `cpu_warning`."""
        self.bundle = bundle
        self.backend = backend
        self.cpu_warning = int8_problem(bundle.manifest.quantization, backend.name)
        if self.cpu_warning is not None:
            if strict_cpu:
                raise BundleError(f"{bundle.path}: {self.cpu_warning}")
            log.warning("%s: %s", bundle.path, self.cpu_warning)
        self.labels: tuple[str, ...] = bundle.manifest.labels  # the outputs' names: labels, or dimensions
        self.answer: AnswerSpec = bundle.manifest.answer_spec  # what they are, and how to read them
        # the most of a clip the model hears (Whisper: 30 s), or None; longer clips are cut, said once
        self.max_input_s: float | None = bundle.manifest.max_input_s
        self._said_cut = False
        if bundle.manifest.sample_rate != SAMPLE_RATE:
            raise BundleError(f"{bundle.path}: graphs at {bundle.manifest.sample_rate} Hz are not supported")
        if not backend.is_active:
            try:
                backend.activate()
            except BackendError:
                raise
            except Exception as e:  # ONNX Runtime's refusal of the graph (bad protobuf, external data outside)
                message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise BundleError(f"{bundle.onnx_path}: the runtime cannot load it: {message}") from None
        self._check_graph()

    def _check_graph(self) -> None:
        """The graph must give one logit per label: a manifest that claims other labels than the graph has
        would otherwise mislabel or drop scores. Checked on half a second of silence (also a warm-up)."""
        audio = np.zeros((1, CHECK_SAMPLES), dtype=np.float32)
        logits = self.backend.infer({"audio": audio, "lengths": np.array([CHECK_SAMPLES], dtype=np.int64)})["logits"]
        if logits.shape != (1, len(self.labels)):
            raise BundleError(
                f"{self.bundle.path}: the graph gives logits of shape {list(logits.shape)} for one clip, but the "
                f"manifest lists {len(self.labels)} labels; re-export the bundle"
            )

    @classmethod
    def load(
        cls,
        bundle: str | Path | Bundle,
        backend: str = "auto",
        threads: int | None = None,
        strict_cpu: bool = False,
    ) -> EmotionRecognizer:
        """Verify and open a bundle folder on `backend` (one of BACKENDS; auto: the fastest here, see
        `open_backend`). `threads` caps the CPU threads (None: ONNX Runtime decides); `strict_cpu`: see the
        constructor."""
        if not isinstance(bundle, Bundle):
            bundle = Bundle.load(bundle)
        return cls(bundle, open_backend(bundle, backend, threads), strict_cpu)

    def predict(self, audio: AudioInput, sample_rate: int | None = None) -> Prediction:
        """Classify one clip: a path, the bytes of an audio file, or samples with their `sample_rate`."""
        return self.predict_batch([audio], sample_rate)[0]

    def predict_batch(
        self, items: Sequence[AudioInput], sample_rate: int | None = None, batch_size: int = 8
    ) -> list[Prediction]:
        """Classify many clips, `batch_size` at a time; answers come back in the order given. All or
        nothing: the first bad item raises its AudioError (use `predict_each` for an answer or an error
        per item).

        Clips are grouped by length so padding stays small; the graph's `lengths` input makes the
        padding invisible to the answer.
        """
        results = self.predict_each(items, sample_rate, batch_size)
        for result in results:
            if isinstance(result, AudioError):
                raise result
        return results  # type: ignore[return-value]

    def predict_each(
        self,
        items: Sequence[AudioInput],
        sample_rate: int | None = None,
        batch_size: int = 8,
        max_seconds: float | None = None,
    ) -> list[Prediction | AudioError]:
        """Like `predict_batch`, but a bad item (undecodable, over `max_seconds`, an answer that is not
        finite) gets its AudioError in its place and every other item its Prediction."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        results: list[Prediction | AudioError | None] = [None] * len(items)
        clips: dict[int, np.ndarray] = {}
        for i, item in enumerate(items):
            try:
                clips[i] = load_audio(item, sample_rate, max_seconds=max_seconds)
            except AudioError as e:
                results[i] = e
        order = sorted(clips, key=lambda i: len(clips[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            try:
                answers: list[Prediction | AudioError] = list(self.classify([clips[i] for i in chunk]))
            except AudioError:  # one clip's answer is not finite: find it, answer the others
                answers = []
                for i in chunk:
                    try:
                        answers += self.classify([clips[i]])
                    except AudioError as e:
                        answers.append(AudioError(f"{_describe(items[i])}: {e}"))
            for i, answer in zip(chunk, answers, strict=True):
                results[i] = answer
        return [r for r in results if r is not None]

    def timeline(
        self,
        audio: AudioInput,
        sample_rate: int | None = None,
        window_s: float = 2.0,
        hop_s: float = 1.0,
        batch_size: int = 8,
        max_windows: int | None = None,
    ) -> Timeline:
        """Emotion per `window_s` window every `hop_s` over a long recording, and overall; more than
        `max_windows` windows is a ValueError, raised before any is classified."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        samples = load_audio(audio, sample_rate)
        bounds = window_bounds(len(samples), window_s, hop_s, max_windows)
        predictions: list[Prediction] = []
        for start in range(0, len(bounds), batch_size):
            predictions += self.classify([samples[a:b] for a, b in bounds[start : start + batch_size]])
        return self.answer.timeline(bounds, predictions, SAMPLE_RATE, len(samples))

    def classify(self, clips: Sequence[np.ndarray]) -> list[Prediction]:
        """One padded batch of decoded clips (float32 mono at 16 kHz), answered in the order given (the
        manifest's answer kind decides how: probabilities per label, or values per dimension).

        Raises AudioError when a clip's logits are not finite (e.g. samples near the float32 limit
        overflow inside the model): an answer is never NaN.
        """
        durations = [len(clip) / SAMPLE_RATE for clip in clips]
        if self.max_input_s is not None:
            clips = self._cut(clips)
        audio, lengths = pad_batch(clips)
        outputs = self.backend.infer({"audio": audio, "lengths": lengths})
        logits = outputs[LOGITS]
        finite = np.isfinite(logits).all(axis=1)
        if not finite.all():
            rows = [int(i) for i in np.flatnonzero(~finite)]
            peak = max(float(np.abs(clips[i]).max()) for i in rows)
            which = f" for clip {', '.join(map(str, rows))} of the batch" if len(clips) > 1 else ""
            raise AudioError(
                f"the model's answer{which} is not finite (peak sample {peak:.3g}; audio is expected within about ±1)"
            )
        return self.answer.predictions(logits, durations, outputs.get(EMBEDDING))

    def _cut(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Clips cut to what the model hears (`max_input_s`): the graph cuts them the same way, so the answer is
        unchanged and the padded batch no longer. Said once per recognizer."""
        assert self.max_input_s is not None
        limit = round(self.max_input_s * SAMPLE_RATE)
        longest = max(len(clip) for clip in clips)
        if longest > limit and not self._said_cut:
            self._said_cut = True
            log.warning(
                "%s: a clip of %.1f s: the model hears its first %g s, as its own feature extractor cuts longer "
                "audio (said once); for long recordings use timeline()",
                self.bundle.path, longest / SAMPLE_RATE, self.max_input_s,
            )  # fmt: skip
        return [clip[:limit] for clip in clips]

    def close(self) -> None:
        if self.backend.is_active:
            self.backend.deactivate()

    def __enter__(self) -> EmotionRecognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _describe(item: AudioInput) -> str:
    if isinstance(item, (str, Path)):
        return str(item)
    return "<bytes>" if isinstance(item, (bytes, bytearray)) else "<array>"
