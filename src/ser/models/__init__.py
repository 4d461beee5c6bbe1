"""The PyTorch side: the architectures, their registry, and checkpoint loading.

The registry is data and imports without torch; the rest is imported on first use, so that
`from ser.models import REGISTRY` (the CLI's choices) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ser.models.registry import REGISTRY, ModelSpec, get_spec

if TYPE_CHECKING:
    from ser.models.checkpoint import CheckpointError, LoadedModel, load_model
    from ser.models.waveform import WaveformClassifier

_LAZY = {
    "CheckpointError": "ser.models.checkpoint",
    "LoadedModel": "ser.models.checkpoint",
    "load_model": "ser.models.checkpoint",
    "WaveformClassifier": "ser.models.waveform",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ser.models' has no attribute {name!r}")


__all__ = ["REGISTRY", "CheckpointError", "LoadedModel", "ModelSpec", "WaveformClassifier", "get_spec", "load_model"]
