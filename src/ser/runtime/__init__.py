"""The torch-free runtime: load a bundle and answer emotions, as labels or dimensions (numpy + ONNX Runtime)."""

from ser.answer import AnswerSpec, Prediction, Timeline, Window
from ser.audio import AudioError, load_audio
from ser.bundle import Bundle, BundleError
from ser.runtime.base import Backend, BackendError
from ser.runtime.recognizer import EmotionRecognizer

__all__ = [
    "AnswerSpec",
    "AudioError",
    "Backend",
    "BackendError",
    "Bundle",
    "BundleError",
    "EmotionRecognizer",
    "Prediction",
    "Timeline",
    "Window",
    "load_audio",
]
