"""The torch-free runtime: load a bundle and answer emotions (numpy + ONNX Runtime)."""

from ser.audio import AudioError, load_audio
from ser.bundle import Bundle, BundleError
from ser.runtime.base import Backend, BackendError
from ser.runtime.recognizer import EmotionRecognizer, Prediction, Timeline, Window

__all__ = [
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
