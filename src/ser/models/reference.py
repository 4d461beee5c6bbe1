"""The PyTorch model as a Backend, so it is compared and benchmarked through the same interface.

Three ways of running it, the references the exported graphs are measured against: eager FP32,
eager under FP16 autocast (CUDA only: CPU autocast is bfloat16, a different number format), and
`torch.compile` (Inductor; its compilation happens in the first calls of each shape).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import PreTrainedModel

from ser.audio import SAMPLE_RATE
from ser.bundle import graph_signature
from ser.models.checkpoint import LoadedModel, has_pretrained_weights
from ser.models.waveform import WaveformClassifier
from ser.runtime.base import Backend, BackendError

PRECISIONS = ("fp32", "fp16")


class TorchBackend(Backend):
    def __init__(
        self,
        module: WaveformClassifier,
        num_labels: int,
        device: str = "cpu",
        precision: str = "fp32",
        compile: bool = False,
    ):
        super().__init__(graph_signature(num_labels)[0])
        if precision not in PRECISIONS:
            raise BackendError(f"pytorch: unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if precision == "fp16" and not device.startswith("cuda"):
            raise BackendError("pytorch: fp16 autocast needs a CUDA device (CPU autocast is bfloat16)")
        self.name = f"pytorch-compile-{device}" if compile else f"pytorch-{device}"
        self.module = module
        self.device = torch.device(device)
        self.precision = precision
        self.compile = compile
        self._run = module

    def _activate(self) -> None:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"{self.name}: torch sees no CUDA device")
        self.module.to(self.device).eval()
        self._run = torch.compile(self.module) if self.compile else self.module

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        autocast = (
            torch.autocast(self.device.type, dtype=torch.float16)
            if self.precision == "fp16"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            audio = torch.from_numpy(feeds["audio"]).to(self.device)
            lengths = torch.from_numpy(feeds["lengths"]).to(self.device)
            logits = self._run(audio, lengths).float().cpu().numpy()
        return {"logits": logits}

    def _deactivate(self) -> None:
        self._run = self.module
        self.module.to("cpu")


class OriginalModel(torch.nn.Module):
    """The checkpoint as its own library runs it, for validating exports against the user's model rather
    than against ser's wrapper of it: a fresh `from_pretrained` of the class config.json names (transformers'
    own for stock heads), fed what the checkpoint's feature extractor makes of each clip alone. Nothing of
    the wrapper (masked norms, fused attention, baked weight norm, in-graph normalisation) is in it.

    Called as the wrapper is, (audio [batch, samples], lengths [batch]) → logits; each row runs unpadded.
    """

    def __init__(self, model: PreTrainedModel, feature_extractor: Any, reference: str):
        super().__init__()
        self.model = model.eval()
        self.feature_extractor = feature_extractor
        self.reference = reference  # e.g. "transformers.WavLMForSequenceClassification"

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        rows = []
        for clip, n in zip(audio, lengths, strict=True):
            inputs = self.feature_extractor(clip[: int(n)].numpy(), sampling_rate=SAMPLE_RATE, return_tensors="pt")
            rows.append(self.model(**inputs).logits)
        return torch.cat(rows)


def original_model(loaded: LoadedModel) -> OriginalModel:
    """`loaded`'s checkpoint loaded again the library's way (see OriginalModel); random weights are rebuilt
    from their seed by the class itself."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, Wav2Vec2FeatureExtractor

    source = loaded.source
    name = source["architecture"]
    library = getattr(transformers, name, None)
    cls = library if library is not None and name == loaded.architecture else type(loaded.model)
    reference = f"{cls.__module__.split('.')[0]}.{cls.__name__}"
    where = source.get("path") or source.get("id")
    feature_extractor = None
    if source["kind"] == "random-init":
        torch.manual_seed(source["seed"])
        model = cls(copy.deepcopy(loaded.model.config))
    elif source["kind"] == "checkpoint" and not has_pretrained_weights(Path(where)):
        # a plain state dict (model.pt): loaded strictly, or it is not the model
        model = cls(cls.config_class.from_pretrained(where))
        model.load_state_dict(torch.load(Path(where) / "model.pt", map_location="cpu", weights_only=True))
    else:
        model = (cls if library is not None else AutoModelForAudioClassification).from_pretrained(where)
    if where is not None:
        try:
            feature_extractor = AutoFeatureExtractor.from_pretrained(where)
        except (OSError, ValueError):  # no preprocessor config: what ser's graph assumes instead
            feature_extractor = None
    if feature_extractor is None:
        feature_extractor = Wav2Vec2FeatureExtractor(do_normalize=loaded.normalize, return_attention_mask=True)
    return OriginalModel(model, feature_extractor, reference)
