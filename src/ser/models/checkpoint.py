"""Load a checkpoint as the class it says it is, or build a family's head with random weights.

A checkpoint folder is what `save_pretrained` writes (config.json with the label map, weights as
model.safetensors or pytorch_model.bin), or config.json beside a plain state dict `model.pt`;
runs/<model>/ is the default: where the training stage writes its best checkpoint. Its config.json
decides the class (`registry.resolve`); a `--model` name only has to agree with it. Weights never load
through bare pickle (safetensors, or torch.load(weights_only=True)), and never partly: a checkpoint
with a missing or unexpected weight is refused, since a newly initialised layer would make the export
a different model from the user's. Only fine-tuning a new head (`labels`) may initialise one, and the
source says which weights it initialised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from ser.answer import CATEGORIES, DIMENSIONS, AnswerSpec
from ser.audio import SAMPLE_RATE
from ser.bundle import sha256_file
from ser.labels import LABELS, canonical_labels, label_problem
from ser.models.registry import WHISPER_LOG_MEL, Architecture, ModelSpec, UnknownArchitecture, get_spec, resolve
from ser.models.waveform import WHISPER_HOP, WaveformClassifier, classifier_of, whisper_window_samples

log = logging.getLogger(__name__)

RUNS_DIR = Path("runs")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PRETRAINED_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_STATE_DICT = "model.pt"
_PREPROCESSOR = "preprocessor_config.json"
RUN_CHECKPOINT = "checkpoint"  # inside a ser-train run folder: the best epoch's checkpoint
# Read only by SpecAugment while training; some public checkpoints leave it out, and no answer depends on it.
_TRAINING_ONLY = ("masked_spec_embed",)
_SHOWN_KEYS = 5


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: the message names it and says what to do."""


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    model: PreTrainedModel
    size: str
    normalize: bool  # the waveform is normalised to zero mean, unit variance inside the graph
    source: dict[str, Any]  # recorded in the bundle manifest: kind, where, architecture, initialised weights

    @property
    def labels(self) -> tuple[str, ...]:
        config = self.model.config
        return tuple(str(config.id2label.get(i, "")) for i in range(config.num_labels))

    @property
    def architecture(self) -> str:
        return type(self.model).__name__

    @property
    def answer(self) -> AnswerSpec:
        """What the outputs are: named dimensions for `problem_type: "regression"` (audeering's arousal,
        dominance, valence), else categories."""
        if getattr(self.model.config, "problem_type", None) == "regression":
            return AnswerSpec(DIMENSIONS, self.labels)
        return AnswerSpec(CATEGORIES, self.labels, canonical_labels(self.labels))

    def feature_extractor(self) -> Any:
        """The Hugging Face feature extractor that feeds this model as ser's graph does: what a checkpoint of it is
        saved with (transformers' pipeline reads it), and what the reference runs when a checkpoint has none."""
        from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

        if self.spec.frontend == WHISPER_LOG_MEL:
            return WhisperFeatureExtractor(feature_size=self.model.config.num_mel_bins)
        return Wav2Vec2FeatureExtractor(do_normalize=self.normalize, return_attention_mask=True)

    def waveform(self, embedding: bool = False) -> WaveformClassifier:
        """The model behind the graph contract (audio, lengths) → logits (and the pooled embedding)."""
        return WaveformClassifier(
            self.model, self.normalize, self.spec.patches, embedding=embedding, frontend=self.spec.frontend
        )


def checkpoint_folder(path: Path) -> Path:
    """The folder holding the checkpoint: `path`, or for a ser-train run folder its `checkpoint` (the best
    epoch, staged whole; see ser.training.loop)."""
    if not (path / "config.json").is_file() and (path / RUN_CHECKPOINT / "config.json").is_file():
        return path / RUN_CHECKPOINT
    return path


def read_config(checkpoint: str | Path) -> dict[str, Any]:
    """A checkpoint's config.json as a dict: from the folder (or run folder), or from the hub for a hub id."""
    path = Path(checkpoint)
    if path.exists():
        path = checkpoint_folder(path)
        file = path / "config.json"
        if not file.is_file():
            raise CheckpointError(f"{path}: not a checkpoint folder (no config.json); save one with save_pretrained")
    elif _HUB_ID.match(str(checkpoint)):
        from huggingface_hub import hf_hub_download

        try:
            file = Path(hf_hub_download(str(checkpoint), "config.json"))
        except Exception as e:  # offline, unknown repository, no config: all mean "cannot load it"
            raise CheckpointError(
                f"{checkpoint}: could not load from the Hugging Face hub (is it reachable?): {e}"
            ) from None
    else:
        raise CheckpointError(f"{checkpoint}: no such checkpoint folder, and not a hub id (owner/name)")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{file}: expected a JSON object")
    return config


def detect(checkpoint: str | Path) -> Architecture:
    """The family and class of a checkpoint folder or hub id, from its config.json."""
    try:
        return resolve(read_config(checkpoint))
    except UnknownArchitecture as e:
        raise CheckpointError(f"{checkpoint}: {e}") from None


def default_checkpoint(name: str) -> Path:
    return RUNS_DIR / name


def load_model(
    name: str | None = None,
    checkpoint: str | Path | None = None,
    size: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    labels: tuple[str, ...] | None = None,
    overrides: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load `checkpoint` (folder or hub id; default runs/<name>) as the class its config names, or build
    family `name`'s own head with random weights at `size` when `random_init` (for latency work: its
    answers mean nothing). `name`, where given with a checkpoint, must be the checkpoint's family.

    For fine-tuning: `labels` gives the model this label map (a new head where the checkpoint's differs,
    or a head on a headless encoder), and `overrides` sets config fields such as dropout rates.
    """
    overrides = dict(overrides or {})
    if random_init:
        if checkpoint is not None:
            raise CheckpointError("give either a checkpoint or random_init, not both")
        if name is None:
            raise CheckpointError("random weights need a model name (--model)")
        spec = get_spec(name)
        size = size or spec.default_size
        torch.manual_seed(seed)
        config = spec.config(size, labels or LABELS)
        for key, value in overrides.items():
            setattr(config, key, value)
        model = spec.model_class(config).eval()
        source = {"kind": "random-init", "seed": seed, "architecture": spec.model_class.__name__}
        return _checked(LoadedModel(spec, model, size, spec.normalize, source), "random init")
    if size is not None:
        raise CheckpointError(
            f"{checkpoint or name}: size is fixed by the checkpoint's config; a size applies to random init only"
        )
    if checkpoint is None:
        if name is None:
            raise CheckpointError("give a checkpoint (folder or hub id), or a model name for runs/<model>")
        get_spec(name)
        checkpoint = default_checkpoint(name)
        if not checkpoint.exists():
            raise CheckpointError(
                f"{name}: no checkpoint at {checkpoint}; pass a checkpoint folder or hub id, "
                "or use random init for latency work"
            )
    architecture = detect(checkpoint)
    spec = architecture.spec
    if name is not None and name != spec.name:
        raise CheckpointError(
            f"{checkpoint}: --model {name}, but the checkpoint is a {spec.name} model ({architecture.name}); "
            f"pass --model {spec.name}, or leave --model out and let the checkpoint decide"
        )
    relabel = labels is not None
    if labels is not None:
        overrides |= {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
            # a head over these labels classifies, even on a dimensional model's encoder (audeering's)
            "problem_type": "single_label_classification",
        }
    if architecture.head is None and not relabel:
        raise CheckpointError(
            f"{checkpoint}: is a headless {architecture.name} (no classification head): nothing to export or "
            f"score; fine-tune a head on it with ser-train --checkpoint {checkpoint}"
        )
    cls = architecture.head or spec.model_class
    path = Path(checkpoint)
    if path.exists():
        path = checkpoint_folder(path)
        where = str(path)
        model, report = _load_folder(cls, path, overrides, relabel)
        source: dict[str, Any] = {"kind": "checkpoint", "path": str(path.absolute()), "sha256": folder_digest(path)}
        preprocessor: Path | None = path / _PREPROCESSOR
    else:
        where = str(checkpoint)
        model, report = _load_hub(cls, where, overrides, relabel)
        source = {"kind": "hub", "id": where, "revision": getattr(model.config, "_commit_hash", None)}
        preprocessor = _hub_preprocessor(where)
    features = _read_features(preprocessor)
    # a config that leaves do_normalize out gets the feature extractor's own default (True), as transformers would
    normalize = spec.normalize if features is None else bool(features.get("do_normalize", True))
    _check_features(features, preprocessor, spec, model.config)
    initialized = _check_weights(where, cls, report, relabel, spec, architecture)
    source["architecture"] = architecture.name
    if initialized:
        source["initialized"] = initialized
    loaded = LoadedModel(spec, model.eval(), spec.size_of(model.config), normalize, source)
    return _checked(loaded, where)


def _checked(loaded: LoadedModel, where: str) -> LoadedModel:
    problem = label_problem(loaded.labels, _logit_count(loaded))
    if problem is not None:
        raise CheckpointError(f"{where}: {problem}; fix id2label in config.json")
    return loaded


def _logit_count(loaded: LoadedModel) -> int:
    """How many logits the model really produces: the width of a head that ends in one Linear layer (the logits
    are its output), else one forward pass over 0.1 s of silence through the front end (for Whisper that would be a
    whole 30 s encoder pass, 14 s at large-v3 on two cores)."""
    last = classifier_of(loaded.model)
    if isinstance(last, torch.nn.Linear):
        return last.out_features
    with torch.no_grad():
        return int(loaded.waveform()(torch.zeros(1, 1600), torch.tensor([1600])).shape[-1])


def _load_folder(
    cls: type[PreTrainedModel], path: Path, overrides: dict[str, Any], relabel: bool
) -> tuple[PreTrainedModel, dict[str, Any]]:
    if has_pretrained_weights(path):
        try:
            return cls.from_pretrained(path, ignore_mismatched_sizes=relabel, output_loading_info=True, **overrides)
        except (OSError, RuntimeError, ValueError) as e:  # shapes that do not fit, unreadable weights
            raise CheckpointError(f"{path}: does not load as {cls.__name__}: {_first_line(e)}") from None
    if (path / _STATE_DICT).is_file():
        model = cls(cls.config_class.from_pretrained(path, **overrides))
        state = torch.load(path / _STATE_DICT, map_location="cpu", weights_only=True)
        own = model.state_dict()
        mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if relabel:  # a new label map: the old head's weights no longer fit and stay freshly initialised
            state = {k: v for k, v in state.items() if k not in mismatched}
        elif mismatched:
            raise CheckpointError(
                f"{path / _STATE_DICT}: weights of another shape than {cls.__name__}'s: {mismatched[:_SHOWN_KEYS]}"
            )
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in mismatched]  # a new head's weights: reported as mismatched
        return model, {"missing_keys": missing, "unexpected_keys": unexpected, "mismatched_keys": mismatched}
    raise CheckpointError(f"{path}: no weights; expected one of {', '.join((*_PRETRAINED_WEIGHTS, _STATE_DICT))}")


def has_pretrained_weights(path: Path) -> bool:
    """Whether the folder holds weights `from_pretrained` reads (else a plain `model.pt` state dict)."""
    return any((path / f).is_file() for f in _PRETRAINED_WEIGHTS)


def _load_hub(
    cls: type[PreTrainedModel], hub_id: str, overrides: dict[str, Any], relabel: bool
) -> tuple[PreTrainedModel, dict[str, Any]]:
    try:
        return cls.from_pretrained(hub_id, ignore_mismatched_sizes=relabel, output_loading_info=True, **overrides)
    except (OSError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{hub_id}: could not load from the Hugging Face hub as {cls.__name__}: {e}") from None


def _check_weights(
    where: str,
    cls: type[PreTrainedModel],
    report: dict[str, Any],
    relabel: bool,
    spec: ModelSpec,
    architecture: Architecture,
) -> list[str]:
    """Refuse any weight the checkpoint lacks or has extra; when fine-tuning a new head (`relabel`), allow
    the head's own weights to be new (returned, to be recorded) and extra weights of other heads."""
    missing = sorted(k for k in report.get("missing_keys", ()) if k.split(".")[-1] not in _TRAINING_ONLY)
    unexpected = sorted(report.get("unexpected_keys", ()))
    mismatched = sorted(k if isinstance(k, str) else k[0] for k in report.get("mismatched_keys", ()))
    encoder = spec.encoder_prefix or cls.base_model_prefix
    if relabel:
        prefix = f"{encoder}." if encoder else None
        encoder_missing = [k for k in missing if prefix is None or k.startswith(prefix)]
        if not encoder_missing:
            return sorted({*missing, *mismatched})
        missing, unexpected, mismatched = encoder_missing, [], []
    if not (missing or unexpected or mismatched):
        return []
    parts = [
        f"{len(keys)} {what} ({', '.join(keys[:_SHOWN_KEYS])}{', …' if len(keys) > _SHOWN_KEYS else ''})"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", mismatched))
        if keys
    ]
    keys = _checkpoint_keys(Path(where))  # read once for both hints
    hint = _likely_class(where, keys, cls, spec)
    head = describe_head(keys, encoder)
    raise CheckpointError(
        f"{where}: its weights do not fit {cls.__name__} (what config.json names as {architecture.name}): "
        f"{'; '.join(parts)} weights. Loading it would initialise the rest at random, so it is refused"
        + (f"; the weights look like a {hint} checkpoint" if hint else "")
        + (f"; {head}" if head else "")
        + ". Save the checkpoint with the class it was trained as (save_pretrained writes architectures)"
    )


# Head layouts by the weight names outside the encoder: (modules present) → what they are.
_HEAD_LAYOUTS = (
    ({"projector", "classifier"}, "transformers' *ForSequenceClassification / *ForAudioClassification head "
     "(projector, classifier)"),
    ({"classifier.dense", "classifier.out_proj"}, "soxan's / audeering's speech-classification head "
     "(classifier.dense, classifier.out_proj: architectures *ForSpeechClassification)"),
    ({"pooling.attention.0", "pooling.attention.2", "classifier.0", "classifier.1", "classifier.4"},
     "ser's enhanced WavLM head (WavLMForEmotion)"),
)  # fmt: skip


def describe_head(keys: set[str], prefix: str) -> str | None:
    """What the head in a checkpoint's weights is, from the names of its weights outside the encoder: a known
    layout, or the modules it has (an older or custom head, e.g. classifier.dense + classifier.output)."""
    if not prefix:  # a model without an encoder prefix (ResNet18): no head to tell apart
        return None
    if keys and not any(k.startswith(f"{prefix}.") for k in keys):
        return "the weights are an encoder saved on its own (no head)"
    modules = sorted({k.rsplit(".", 1)[0] for k in keys if not k.startswith(f"{prefix}.") and "." in k})
    if not modules:
        return "the weights hold no head at all (an encoder only)" if keys else None
    for layout, name in _HEAD_LAYOUTS:
        if set(modules) == layout:
            return f"its head is {name}"
    return (
        f"its head has {', '.join(modules)}, the layout of no class ser (or transformers) has: a custom or older "
        "head, which only the code that trained it can run faithfully"
    )


def _likely_class(where: str, keys: set[str], tried: type[PreTrainedModel], spec: ModelSpec) -> str | None:
    """The class of the family whose parameter names match the checkpoint's (`keys`) best, if not `tried`: a
    hint."""
    import transformers

    if not keys:
        return None
    config = read_config(where)
    encoders = [getattr(transformers, name) for name in spec.encoders if hasattr(transformers, name)]
    candidates = [*(head.load() for head in spec.heads), *encoders]
    scores: dict[str, int] = {}
    for cls in candidates:
        try:
            with torch.device("meta"):
                own = set(cls(cls.config_class.from_dict(config)).state_dict())
        except Exception:  # a candidate that cannot be built from this config cannot be the answer
            continue
        prefix = f"{cls.base_model_prefix}." if cls.base_model_prefix else ""
        strip = {k.removeprefix(prefix) for k in own}
        scores[cls.__name__] = len(strip ^ {k.removeprefix(prefix) for k in keys})
    if not scores:
        return None
    best = min(scores, key=scores.__getitem__)
    return None if best == tried.__name__ or scores[best] >= scores.get(tried.__name__, 1 << 30) else best


def _checkpoint_keys(path: Path) -> set[str]:
    """Parameter names in a checkpoint folder's weights, read without loading tensors where possible."""
    if not path.is_dir():
        return set()
    if (path / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(path / "model.safetensors", "pt") as f:
            return set(f.keys())
    if (path / "model.safetensors.index.json").is_file():
        return set(json.loads((path / "model.safetensors.index.json").read_text()).get("weight_map", {}))
    for name in ("pytorch_model.bin", _STATE_DICT):
        if (path / name).is_file():
            return set(torch.load(path / name, map_location="meta", weights_only=True))
    return set()


def _hub_preprocessor(hub_id: str) -> Path | None:
    """The hub checkpoint's preprocessor_config.json, downloaded, or None where it has none."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(hub_id, _PREPROCESSOR))
    except Exception:  # no preprocessor config on the hub: the family's defaults hold
        return None


def _read_features(preprocessor_config: Path | None) -> dict[str, Any] | None:
    """The feature extractor's settings, read once for every check; None without a preprocessor config (the
    family's defaults hold)."""
    if preprocessor_config is None or not preprocessor_config.is_file():
        return None
    try:
        return json.loads(preprocessor_config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{preprocessor_config}: not valid JSON: {e}") from None


# WhisperFeatureExtractor's settings that ser's in-graph front end computes (ser.models.frontends.WhisperLogMel).
_WHISPER_FEATURES = {"sampling_rate": SAMPLE_RATE, "n_fft": 400, "hop_length": WHISPER_HOP}


def _check_features(features: dict[str, Any] | None, preprocessor_config: Path | None, spec: ModelSpec,
                    config: Any) -> None:  # fmt: skip
    """A Whisper checkpoint's feature extractor must make what the graph's front end makes: refused otherwise,
    naming the setting (a model fed other features than it was trained on answers something else)."""
    if spec.frontend != WHISPER_LOG_MEL or features is None:
        return
    expected = {
        **_WHISPER_FEATURES,
        "feature_size": config.num_mel_bins,
        "chunk_length": whisper_window_samples(config) // SAMPLE_RATE,
    }
    for key, value in expected.items():
        if key in features and features[key] != value:
            raise CheckpointError(
                f"{preprocessor_config}: {key} is {features[key]!r}, but the model (config.json) needs {value!r}: "
                "ser computes Whisper's log-mel for the encoder's own shape; fix the preprocessor config"
            )
    if features.get("dither", 0.0):
        log.warning("%s: dither %s is left out: the exported graph answers deterministically, as with dither 0",
                    preprocessor_config, features["dither"])  # fmt: skip


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def folder_digest(path: Path) -> str:
    """One sha256 over a checkpoint's own files (config, weights), for the manifest: a training run's
    logs and resume state beside them do not change it."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file() and _is_checkpoint_file(p.name)):
        digest.update(f"{file.name}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def _is_checkpoint_file(name: str) -> bool:
    return name in ("config.json", _PREPROCESSOR, _STATE_DICT) or name.endswith(
        (".safetensors", ".safetensors.index.json", ".bin")
    )
