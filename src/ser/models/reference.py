"""The PyTorch model as a Backend, so it is compared and benchmarked through the same interface.

Three ways of running it, the references the exported graphs are measured against: eager FP32,
eager under FP16 autocast (CUDA only: CPU autocast is bfloat16, a different number format), and
`torch.compile` (Inductor; its compilation happens in the first calls of each shape). And one peer a
PyTorch user would reach for instead of ser: eager with `torch.ao.quantization.quantize_dynamic`'s
INT8 Linear layers (CPU only; the convolutions stay FP32).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import PreTrainedModel

from ser.audio import SAMPLE_RATE
from ser.bundle import EMBEDDING, LOGITS, graph_signature
from ser.models.checkpoint import LoadedModel, has_pretrained_weights
from ser.models.waveform import WaveformClassifier
from ser.runtime.base import Backend, BackendError

PRECISIONS = ("fp32", "fp16", "int8-dynamic")


class TorchBackend(Backend):
    def __init__(
        self,
        module: WaveformClassifier | OriginalModel,
        num_labels: int | None = None,  # for the output spec; the graph contract's inputs do not depend on it
        device: str = "cpu",
        precision: str = "fp32",
        compile: bool = False,
    ):
        super().__init__(graph_signature(num_labels or 0)[0])
        if precision not in PRECISIONS:
            raise BackendError(f"pytorch: unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if precision == "fp16" and not device.startswith("cuda"):
            raise BackendError("pytorch: fp16 autocast needs a CUDA device (CPU autocast is bfloat16)")
        if precision == "int8-dynamic" and device != "cpu":
            raise BackendError("pytorch: dynamic INT8 (quantize_dynamic) runs on the CPU only")
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
        run: torch.nn.Module = self.module
        if self.precision == "int8-dynamic":
            run = dynamic_int8(run)
        self._run = torch.compile(run) if self.compile else run

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        autocast = (
            torch.autocast(self.device.type, dtype=torch.float16)
            if self.precision == "fp16"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            audio = torch.from_numpy(feeds["audio"]).to(self.device)
            lengths = torch.from_numpy(feeds["lengths"]).to(self.device)
            outputs = self._run(audio, lengths)
        if isinstance(outputs, tuple):  # a wrapper made with an embedding output
            return {LOGITS: outputs[0].float().cpu().numpy(), EMBEDDING: outputs[1].float().cpu().numpy()}
        return {LOGITS: outputs.float().cpu().numpy()}

    def _deactivate(self) -> None:
        self._run = self.module
        self.module.to("cpu")


def dynamic_int8(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of `module` with its Linear layers in dynamic INT8, as a PyTorch user would quantize it. Not the
    projections of an attention that hands its weights to `F.multi_head_attention_forward` itself
    (transformers' WavLM): a quantized Linear has no weight tensor to hand over."""
    reads_weights = [
        name for name, child in module.named_modules() if hasattr(child, "torch_multi_head_self_attention")
    ]
    linear = {
        name: torch.ao.quantization.default_dynamic_qconfig
        for name, child in module.named_modules()
        if isinstance(child, torch.nn.Linear) and not any(name.startswith(f"{owner}.") for owner in reads_weights)
    }
    with warnings.catch_warnings():  # deprecated in favour of torchao, which this torch has no build of
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(module, linear, dtype=torch.qint8)


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
    from transformers import AutoFeatureExtractor

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
        model = cls.from_pretrained(where)  # the class config.json names, not whatever Auto maps its type to
    if where is not None:
        try:
            feature_extractor = AutoFeatureExtractor.from_pretrained(where)
        except (OSError, ValueError):  # no preprocessor config: what ser's graph assumes instead
            feature_extractor = None
    if feature_extractor is None:
        feature_extractor = loaded.feature_extractor()
    return OriginalModel(model, feature_extractor, reference)
