"""The PyTorch side: the four architectures, their registry, and checkpoint loading."""

from ser.models.checkpoint import CheckpointError, LoadedModel, load_model
from ser.models.registry import REGISTRY, ModelSpec, get_spec
from ser.models.waveform import WaveformClassifier

__all__ = ["REGISTRY", "CheckpointError", "LoadedModel", "ModelSpec", "WaveformClassifier", "get_spec", "load_model"]
