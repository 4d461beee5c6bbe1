"""ser: take a fine-tuned speech-emotion model from PyTorch to a production bundle.

The public face, after openai/whisper's `load_model`/`transcribe`:

    import ser
    bundle = ser.export("runs/wavlm", "bundles/wavlm", int8="static", calibration_data="data/calib")  # torch
    recognizer = ser.load("bundles/wavlm")  # numpy + ONNX Runtime (or TensorRT): no torch
    print(recognizer.predict("clip.wav").label)

Both import their stage when called, so `import ser` costs nothing and a service that only loads
bundles never imports torch. Everything else is in the documented submodules (`ser.runtime`,
`ser.export`, `ser.bench`, `ser.training`, `ser.data`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ser.bundle import Bundle
    from ser.runtime.recognizer import EmotionRecognizer

__version__ = "0.1.0"


def load(
    bundle: str | Path | Bundle,
    backend: str = "auto",
    threads: int | None = None,
    strict_cpu: bool = False,
) -> EmotionRecognizer:
    """A verified bundle folder, opened on the fastest backend here: `EmotionRecognizer.load`."""
    from ser.runtime.recognizer import EmotionRecognizer

    return EmotionRecognizer.load(bundle, backend, threads, strict_cpu)


def __getattr__(name: str) -> Any:
    # `ser.export` is the export package, callable as `ser.export(checkpoint, out, ...)` (see its `export`).
    if name == "export":
        return importlib.import_module("ser.export")
    raise AttributeError(f"module 'ser' has no attribute {name!r}")
