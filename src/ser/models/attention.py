"""Self-attention as one operator, so the exported graph holds one fused node per layer.

ONNX Runtime's transformer optimizer fuses attention only for the BERT/GPT patterns it knows, and
finds none in the wav2vec2 family as torch.onnx exports it (0 of 12 layers). Instead of matching
patterns after the fact, `fused_attention(model)` swaps each layer's attention core (the class and
method its family's ModelSpec.patches names) for
`ser::multi_head_attention`, a torch op with an SDPA implementation that the exporter writes as
ONNX Runtime's `com.microsoft.MultiHeadAttention` (see ser.export.onnx). Projections stay plain
Linear layers, which the quantizer sees as MatMuls. Everything the layer adds to the scores (the
padding mask, WavLM's gated relative position bias) travels as one additive `attention_bias`
[batch, heads or 1, frames, frames].
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType

import torch
from torch import nn

from ser.models.waveform import WaveformClassifier


@torch.library.custom_op("ser::multi_head_attention", mutates_args=())
def multi_head_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor, num_heads: int, scale: float
) -> torch.Tensor:
    """query/key/value [batch, frames, hidden] (projected), bias additive [batch, heads or 1, frames, frames]."""
    batch, frames, hidden = query.shape

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(batch, -1, num_heads, hidden // num_heads).transpose(1, 2)

    out = nn.functional.scaled_dot_product_attention(heads(query), heads(key), heads(value), bias, scale=scale)
    return out.transpose(1, 2).reshape(batch, frames, hidden)


@multi_head_attention.register_fake
def _(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor, num_heads: int, scale: float):
    return torch.empty_like(query)


def additive_bias(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A Hugging Face attention mask (None, bool keep-mask or additive float) → additive float [b|1, 1|h, t, t]
    (None, as in Whisper's encoder: one zero bias that broadcasts over the batch)."""
    frames = like.shape[1]
    if mask is None:
        return like.new_zeros(1, 1, frames, frames)
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=like.dtype).masked_fill(~mask, torch.finfo(like.dtype).min)
    return mask.to(like.dtype)


def _attend(layer: nn.Module, hidden_states: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, None]:
    """The layer's projections around one fused attention call; the layer's own attention weights
    are not returned (None), as with Hugging Face's SDPA path."""
    out = multi_head_attention(
        layer.q_proj(hidden_states),
        layer.k_proj(hidden_states),
        layer.v_proj(hidden_states),
        bias,
        layer.num_heads,
        layer.scaling,
    )
    return layer.out_proj(out), None


def _wav2vec2_forward(
    self: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
) -> tuple[torch.Tensor, None]:
    if kwargs.get("key_value_states") is not None:
        raise ValueError("fused attention is self-attention only")
    return _attend(self, hidden_states, additive_bias(attention_mask, hidden_states))


def _wavlm_core(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    gated_position_bias: torch.Tensor,
) -> tuple[torch.Tensor, None]:
    # Stands in for WavLMAttention.torch_multi_head_self_attention: attention_mask is [batch, frames]
    # with 1 for valid frames; the gated bias is [batch * heads, frames, frames].
    batch, frames, _ = hidden_states.shape
    bias = gated_position_bias.view(batch, self.num_heads, frames, frames)
    if attention_mask is not None:
        padded = attention_mask.ne(1)[:, None, None, :]
        bias = bias.masked_fill(padded, torch.finfo(bias.dtype).min)
    return _attend(self, hidden_states, bias)


# ExportPatches.attention_method → its replacement. wav2vec2, HuBERT, data2vec-audio and UniSpeech-SAT share
# wav2vec2's attention code (projections, mask, signature), and Whisper's encoder the same projections and
# signature (its query scaling, applied before the product, is the fused op's `scale`); WavLM computes its gated
# relative position bias in `forward` and hands it to a separate core.
_REPLACEMENTS = {"forward": _wav2vec2_forward, "torch_multi_head_self_attention": _wavlm_core}


@contextmanager
def fused_attention(model: WaveformClassifier) -> Iterator[int]:
    """Within the block, every self-attention layer of `model` runs through `multi_head_attention`.

    Yields how many layers were swapped (0 for a family without attention, e.g. ResNet18). The
    original methods come back on exit, so the same model can then serve as the reference.
    """
    patches = model.patches
    attention = patches.attention_class()
    swapped = [m for m in model.modules() if attention is not None and isinstance(m, attention)]
    replacement = _REPLACEMENTS[patches.attention_method]
    for module in swapped:
        setattr(module, patches.attention_method, MethodType(replacement, module))
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            delattr(module, patches.attention_method)
