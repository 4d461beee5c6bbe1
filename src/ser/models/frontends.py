"""Exportable, padding-aware front ends shared by the models.

Everything here takes `lengths` (valid samples or frames per row) so that a right-padded batch
gives each row exactly the answer it would get alone, and is built from operations every ONNX
backend runs (no STFT op: ONNX Runtime's CUDA provider lacks it and older TensorRT rejects it).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers.audio_utils import mel_filter_bank, window_function

NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor's epsilon for zero-mean unit-variance normalisation


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """[batch] valid counts → [batch, size] bool mask, True where valid."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def masked_normalize(audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero-mean, unit-variance per row over its valid samples; padding comes out as 0.

    Matches Wav2Vec2FeatureExtractor(do_normalize=True), which normalises each clip before padding.
    audio: [batch, samples] float32; lengths: [batch] int64.
    """
    mask = length_mask(lengths, audio.shape[1]).to(audio.dtype)
    count = lengths.to(audio.dtype)[:, None]
    mean = (audio * mask).sum(dim=1, keepdim=True) / count
    centred = (audio - mean) * mask
    var = (centred * centred).sum(dim=1, keepdim=True) / count
    return centred / torch.sqrt(var + NORM_EPS)


class MaskedGroupNormConvLayer(nn.Module):
    """Stand-in for the wav2vec2 family's first conv layer when `feat_extract_norm="group"`.

    That GroupNorm has one group per channel, so it normalises each channel over *time*, and in a
    padded batch the statistics would include the padding. Here they cover valid frames only.
    The model's forward has no way to pass lengths down to this layer, so the waveform wrapper
    sets `frame_lengths` just before each call; left as None, the layer behaves exactly as the
    original (all frames valid), so training and Hugging Face pipelines are unaffected.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        norm = layer.layer_norm
        if not isinstance(norm, nn.GroupNorm) or norm.num_groups != norm.num_channels:
            raise ValueError("MaskedGroupNormConvLayer expects a GroupNorm with one group per channel")
        self.conv, self.layer_norm, self.activation = layer.conv, norm, layer.activation
        self.frame_lengths: torch.Tensor | None = None

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths - self.conv.kernel_size[0]) // self.conv.stride[0] + 1

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.conv(hidden_states)  # [batch, channels, frames]
        if self.frame_lengths is None:
            x = self.layer_norm(x)
        else:
            # Sums over valid frames as a matrix-vector product ([b, c, t] @ [b, t, 1]): one pass over
            # the largest activation in the model, where a masked multiply + ReduceSum takes three.
            weights = length_mask(self.frame_lengths, x.shape[2]).to(x.dtype)[:, :, None]
            weights = weights / self.frame_lengths.to(x.dtype)[:, None, None]
            mean = torch.matmul(x, weights)
            centred = x - mean
            var = torch.matmul(centred * centred, weights)
            x = centred / torch.sqrt(var + self.layer_norm.eps)
            x = x * self.layer_norm.weight[None, :, None] + self.layer_norm.bias[None, :, None]
        return self.activation(x)


class MaskedPositionalConvStack(nn.Module):
    """Stand-in for data2vec-audio's positional embedding, a stack of "same"-padded convolutions.

    Alone, a clip's frames past its end are the convolutions' zero padding at every layer; in a padded
    batch, only the first layer sees zeros there (the encoder zeroes padded frames once), and each later
    layer reads the previous one's output over the padding into the last valid frames. Re-zeroing the
    padded frames before every layer gives each row its answer alone. Holds the same `layers`, so
    parameter names (and checkpoints) are unchanged; `frame_lengths` is set by the waveform wrapper.
    """

    def __init__(self, embedding: nn.Module):
        super().__init__()
        self.layers = embedding.layers
        self.frame_lengths: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states.transpose(1, 2)  # [batch, hidden, frames]
        for layer in self.layers:
            if self.frame_lengths is not None:
                x = x * length_mask(self.frame_lengths, x.shape[2]).to(x.dtype)[:, None, :]
            x = layer(x)
        return x.transpose(1, 2)


class LogMel(nn.Module):
    """Log-mel spectrogram as a strided convolution with a windowed DFT basis.

    Frames are centred (n_fft // 2 zeros each side), so a clip of L samples has 1 + L // hop
    frames and padding beyond L, once zeroed, cannot reach them. Power, mel and log stay in FP32
    with a clamp before the log. The basis and filterbank are buffers: saved with the checkpoint,
    so loading never depends on how they were computed.
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        n_freq = n_fft // 2 + 1
        window = window_function(n_fft, "hann", periodic=True)
        t = np.arange(n_fft)[None, :]
        k = np.arange(n_freq)[:, None]
        angle = 2 * np.pi * k * t / n_fft
        basis = np.concatenate([np.cos(angle), -np.sin(angle)]) * window  # [2 * n_freq, n_fft]
        self.register_buffer("dft_basis", torch.tensor(basis[:, None, :], dtype=torch.float32))
        fbank = mel_filter_bank(n_freq, n_mels, 0.0, sample_rate / 2, sample_rate, norm="slaney", mel_scale="slaney")
        self.register_buffer("mel_filters", torch.tensor(fbank, dtype=torch.float32))  # [n_freq, n_mels]

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths // self.hop_length + 1

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """audio [batch, samples] → log-mel [batch, n_mels, frames]."""
        audio = audio * length_mask(lengths, audio.shape[1]).to(audio.dtype)
        padded = nn.functional.pad(audio[:, None, :], (self.n_fft // 2, self.n_fft // 2))
        spectrum = nn.functional.conv1d(padded.float(), self.dft_basis, stride=self.hop_length)
        real, imag = spectrum.chunk(2, dim=1)
        power = real * real + imag * imag  # [batch, n_freq, frames]
        mel = torch.matmul(power.transpose(1, 2), self.mel_filters).transpose(1, 2)
        return torch.log10(torch.clamp(mel, min=1e-10))
