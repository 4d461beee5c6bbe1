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
from ser.models.registry import REGISTRY, ModelSpec, get_spec
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


def spec_for_checkpoint(path: str | Path) -> ModelSpec:
    """The spec that loads the checkpoint folder `path`, read from its config.json's model_type."""
    config = Path(path) / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{path}: not a checkpoint folder (no config.json)")
    model_type = json.loads(config.read_text()).get("model_type")
    for spec in REGISTRY.values():
        if model_type in spec.model_types:
            return spec
    raise CheckpointError(f"{path}: model_type {model_type!r} is none of {', '.join(REGISTRY)}")


def default_checkpoint(name: str) -> Path:
    return RUNS_DIR / name


def load_model(
    name: str,
    checkpoint: str | Path | None = None,
    size: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    labels: tuple[str, ...] | None = None,
    overrides: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load model `name` from `checkpoint` (folder or hub id; default runs/<name>), or build it with
    random weights at `size` when `random_init` (for latency work: its answers mean nothing).

    For fine-tuning: `labels` gives the model this label map (a new head where the checkpoint's
    differs, e.g. a pretrained encoder with no head at all), and `overrides` sets config fields
    such as dropout rates.
    """
    spec = get_spec(name)
    overrides = dict(overrides or {})
    if random_init:
        if checkpoint is not None:
            raise CheckpointError("give either a checkpoint or random_init, not both")
        size = size or spec.default_size
        torch.manual_seed(seed)
        config = spec.config(size, labels or LABELS)
        for key, value in overrides.items():
            setattr(config, key, value)
        model = spec.model_class(config).eval()
        return LoadedModel(spec, model, size, spec.normalize, {"kind": "random-init", "seed": seed})
    if labels is not None:
        overrides |= {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
        }
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
        return _load_folder(spec, path, overrides, relabel=labels is not None)
    if _HUB_ID.match(str(checkpoint)):
        return _load_hub(spec, str(checkpoint), overrides, relabel=labels is not None)
    raise CheckpointError(f"{checkpoint}: no such checkpoint folder, and not a hub id (owner/name)")


def _load_folder(spec: ModelSpec, path: Path, overrides: dict[str, Any], relabel: bool) -> LoadedModel:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: not a checkpoint folder (no config.json); save one with save_pretrained")
    _check_model_type(spec, json.loads(config_file.read_text()).get("model_type"), str(path))
    if any((path / f).is_file() for f in _PRETRAINED_WEIGHTS):
        model = spec.model_class.from_pretrained(path, ignore_mismatched_sizes=relabel, **overrides)
    elif (path / _STATE_DICT).is_file():
        model = spec.model_class(spec.config_class.from_pretrained(path, **overrides))
        state = torch.load(path / _STATE_DICT, map_location="cpu", weights_only=True)
        if relabel:  # a new label map: the old head's weights no longer fit and stay freshly initialised
            own = model.state_dict()
            state = {k: v for k, v in state.items() if k not in own or own[k].shape == v.shape}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or (missing and not relabel):
            raise CheckpointError(
                f"{path / _STATE_DICT}: does not fit {spec.model_class.__name__}: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
    else:
        raise CheckpointError(f"{path}: no weights; expected one of {', '.join((*_PRETRAINED_WEIGHTS, _STATE_DICT))}")
    normalize = _normalize_from(path / "preprocessor_config.json", spec.normalize)
    source = {"kind": "checkpoint", "path": str(path.resolve()), "sha256": folder_digest(path)}
    return LoadedModel(spec, model.eval(), spec.size_of(model.config), normalize, source)


def _load_hub(spec: ModelSpec, hub_id: str, overrides: dict[str, Any], relabel: bool) -> LoadedModel:
    from huggingface_hub import hf_hub_download

    try:
        config = spec.config_class.from_pretrained(hub_id, **overrides)
        _check_model_type(spec, config.model_type, hub_id)
        model = spec.model_class.from_pretrained(hub_id, config=config, ignore_mismatched_sizes=relabel)
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
    """One sha256 over a checkpoint's own files (config, weights), for the manifest: a training run's
    logs and resume state beside them do not change it."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file() and _is_checkpoint_file(p.name)):
        digest.update(f"{file.name}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def _is_checkpoint_file(name: str) -> bool:
    return name in ("config.json", "preprocessor_config.json", _STATE_DICT) or name.endswith(
        (".safetensors", ".safetensors.index.json", ".bin")
    )
