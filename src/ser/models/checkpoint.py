"""Load a model by registry name from a checkpoint folder, a hub id, or random weights.

A checkpoint folder is what `save_pretrained` writes (config.json with the label map, weights as
model.safetensors or pytorch_model.bin), or config.json beside a plain state dict `model.pt`;
runs/<model>/ is the default: where the training stage is to write its best checkpoint. Weights never load
through bare pickle: safetensors, or torch.load(weights_only=True).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from ser.bundle import sha256_file
from ser.labels import LABELS
from ser.models.registry import ModelSpec, get_spec
from ser.models.waveform import WaveformClassifier

RUNS_DIR = Path("runs")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PRETRAINED_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_STATE_DICT = "model.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: the message names it and says what to do."""


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    model: PreTrainedModel
    size: str
    normalize: bool  # the waveform is normalised to zero mean, unit variance inside the graph
    source: dict[str, Any]  # recorded in the bundle manifest

    @property
    def labels(self) -> tuple[str, ...]:
        config = self.model.config
        return tuple(str(config.id2label[i]) for i in range(config.num_labels))

    def waveform(self) -> WaveformClassifier:
        """The model behind the graph contract (audio, lengths) → logits."""
        return WaveformClassifier(self.model, self.normalize)


def default_checkpoint(name: str) -> Path:
    return RUNS_DIR / name


def load_model(
    name: str,
    checkpoint: str | Path | None = None,
    size: str | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> LoadedModel:
    """Load model `name` from `checkpoint` (folder or hub id; default runs/<name>), or build it with
    random weights at `size` when `random_init` (for latency work: its answers mean nothing)."""
    spec = get_spec(name)
    if random_init:
        if checkpoint is not None:
            raise CheckpointError("give either a checkpoint or random_init, not both")
        size = size or spec.default_size
        torch.manual_seed(seed)
        model = spec.build(size, LABELS)
        return LoadedModel(spec, model, size, spec.normalize, {"kind": "random-init", "seed": seed})
    if size is not None:
        raise CheckpointError(f"{name}: size is fixed by the checkpoint's config; a size applies to random init only")
    if checkpoint is None:
        checkpoint = default_checkpoint(name)
        if not checkpoint.exists():
            raise CheckpointError(
                f"{name}: no checkpoint at {checkpoint}; pass a checkpoint folder or hub id, "
                "or use random init for latency work"
            )
    path = Path(checkpoint)
    if path.exists():
        return _load_folder(spec, path)
    if _HUB_ID.match(str(checkpoint)):
        return _load_hub(spec, str(checkpoint))
    raise CheckpointError(f"{checkpoint}: no such checkpoint folder, and not a hub id (owner/name)")


def _load_folder(spec: ModelSpec, path: Path) -> LoadedModel:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: not a checkpoint folder (no config.json); save one with save_pretrained")
    _check_model_type(spec, json.loads(config_file.read_text()).get("model_type"), str(path))
    if any((path / f).is_file() for f in _PRETRAINED_WEIGHTS):
        model = spec.model_class.from_pretrained(path)
    elif (path / _STATE_DICT).is_file():
        model = spec.model_class(spec.config_class.from_pretrained(path))
        state = torch.load(path / _STATE_DICT, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{path / _STATE_DICT}: does not fit {spec.model_class.__name__}: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
    else:
        raise CheckpointError(f"{path}: no weights; expected one of {', '.join((*_PRETRAINED_WEIGHTS, _STATE_DICT))}")
    normalize = _normalize_from(path / "preprocessor_config.json", spec.normalize)
    source = {"kind": "checkpoint", "path": str(path.resolve()), "sha256": folder_digest(path)}
    return LoadedModel(spec, model.eval(), spec.size_of(model.config), normalize, source)


def _load_hub(spec: ModelSpec, hub_id: str) -> LoadedModel:
    from huggingface_hub import hf_hub_download

    try:
        config = spec.config_class.from_pretrained(hub_id)
        _check_model_type(spec, config.model_type, hub_id)
        model = spec.model_class.from_pretrained(hub_id, config=config)
    except OSError as e:
        raise CheckpointError(f"{hub_id}: could not load from the Hugging Face hub (is it reachable?): {e}") from None
    try:
        normalize = _normalize_from(Path(hf_hub_download(hub_id, "preprocessor_config.json")), spec.normalize)
    except Exception:  # no preprocessor config on the hub: the spec's default holds
        normalize = spec.normalize
    source = {"kind": "hub", "id": hub_id, "revision": getattr(model.config, "_commit_hash", None)}
    return LoadedModel(spec, model.eval(), spec.size_of(model.config), normalize, source)


def _check_model_type(spec: ModelSpec, model_type: str | None, where: str) -> None:
    if model_type not in spec.model_types:
        raise CheckpointError(
            f"{where}: holds a {model_type!r} model, but model {spec.name} loads {', '.join(spec.model_types)}"
        )


def _normalize_from(preprocessor_config: Path, default: bool) -> bool:
    if not preprocessor_config.is_file():
        return default
    return bool(json.loads(preprocessor_config.read_text()).get("do_normalize", default))


def folder_digest(path: Path) -> str:
    """One sha256 over a checkpoint folder's files (names and contents), for the manifest."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(f"{file.name}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()
