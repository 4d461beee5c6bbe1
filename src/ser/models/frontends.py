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
        norm, conv = layer.layer_norm, layer.conv
        if not isinstance(norm, nn.GroupNorm) or norm.num_groups != norm.num_channels:
            raise ValueError("MaskedGroupNormConvLayer expects a GroupNorm with one group per channel")
        if conv.in_channels != 1 or conv.groups != 1 or conv.padding != (0,) or conv.dilation != (1,):
            raise ValueError("MaskedGroupNormConvLayer expects the first conv: one input channel, no padding")
        self.conv, self.layer_norm, self.activation = conv, norm, layer.activation
        self.frame_lengths: torch.Tensor | None = None
        # Conv1d weights that copy each window of the waveform the conv reads: [kernel, 1, kernel].
        self.register_buffer("windows", torch.eye(conv.kernel_size[0])[:, None, :], persistent=False)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths - self.conv.kernel_size[0]) // self.conv.stride[0] + 1

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.conv(hidden_states)  # [batch, channels, frames]
        if self.frame_lengths is None:
            return self.activation(self.layer_norm(x))
        scale, shift = self._normalizing_affine(hidden_states, x.shape[2])
        return self.activation(x * scale + shift)

    def _normalizing_affine(self, waveform: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) [batch, channels, 1] such that conv output * scale + shift is the masked GroupNorm.

        The conv is linear, so each channel's mean and variance over valid frames follow from the mean and
        covariance of the waveform windows it reads (kernel values per frame: [batch, 10, frames] where its
        output is [batch, 512, frames]): the statistics never touch the largest activation of the model, and
        the normalisation is one multiply-add over it instead of five passes. Two-pass (windows centred
        first), so no E[x²] - E[x]² cancellation."""
        weight = self.conv.weight[:, 0, :]  # [channels, kernel]
        valid = length_mask(self.frame_lengths, frames).to(waveform.dtype)[:, :, None]
        valid = valid / self.frame_lengths.to(waveform.dtype)[:, None, None]  # [batch, frames, 1], sums to 1
        windows = nn.functional.conv1d(waveform, self.windows.to(waveform), stride=self.conv.stride)
        mean_window = torch.matmul(windows, valid)  # [batch, kernel, 1]
        centred = windows - mean_window
        covariance = torch.matmul(centred * valid.transpose(1, 2), centred.transpose(1, 2))  # [batch, kernel, kernel]
        mean = torch.matmul(weight, mean_window)  # [batch, channels, 1]
        if self.conv.bias is not None:
            mean = mean + self.conv.bias[None, :, None]
        var = (torch.matmul(weight, covariance) * weight).sum(dim=2, keepdim=True).clamp(min=0.0)
        scale = self.layer_norm.weight[None, :, None] * torch.rsqrt(var + self.layer_norm.eps)
        return scale, self.layer_norm.bias[None, :, None] - mean * scale


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


def dft_basis(n_fft: int) -> torch.Tensor:
    """A Hann-windowed DFT as convolution weights [2 * (n_fft // 2 + 1), 1, n_fft]: real parts, then imaginary."""
    window = window_function(n_fft, "hann", periodic=True)
    t = np.arange(n_fft)[None, :]
    k = np.arange(n_fft // 2 + 1)[:, None]
    angle = 2 * np.pi * k * t / n_fft
    basis = np.concatenate([np.cos(angle), -np.sin(angle)]) * window
    return torch.tensor(basis[:, None, :], dtype=torch.float32)


def power_spectrum(padded: torch.Tensor, basis: torch.Tensor, hop_length: int) -> torch.Tensor:
    """[batch, samples] (already padded for centring) → power [batch, n_freq, frames], in FP32."""
    spectrum = nn.functional.conv1d(padded[:, None, :].float(), basis, stride=hop_length)
    real, imag = spectrum.chunk(2, dim=1)
    return real * real + imag * imag


def slaney_mel_filters(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Slaney-normalised mel filters on the Slaney scale, 0 Hz to Nyquist: [n_fft // 2 + 1, n_mels]."""
    n_freq = n_fft // 2 + 1
    fbank = mel_filter_bank(n_freq, n_mels, 0.0, sample_rate / 2, sample_rate, norm="slaney", mel_scale="slaney")
    return torch.tensor(fbank, dtype=torch.float32)


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
        self.register_buffer("dft_basis", dft_basis(n_fft))
        self.register_buffer("mel_filters", slaney_mel_filters(n_fft, n_mels, sample_rate))  # [n_freq, n_mels]

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths // self.hop_length + 1

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """audio [batch, samples] → log-mel [batch, n_mels, frames]."""
        audio = audio * length_mask(lengths, audio.shape[1]).to(audio.dtype)
        padded = nn.functional.pad(audio, (self.n_fft // 2, self.n_fft // 2))
        power = power_spectrum(padded, self.dft_basis, self.hop_length)  # [batch, n_freq, frames]
        mel = torch.matmul(power.transpose(1, 2), self.mel_filters).transpose(1, 2)
        return torch.log10(torch.clamp(mel, min=1e-10))


class WhisperLogMel(nn.Module):
    """WhisperFeatureExtractor inside the graph: every clip cut or zero-padded to `n_samples` (30 s), a centred
    STFT with reflected edges (n_fft 400, hop 160; the last frame dropped), Slaney mel power, log10 clamped at
    1e-10, floored at the clip's own maximum minus 8, then (x + 4) / 4.

    The padding to 30 s is part of the model, not an implementation detail: Whisper's encoder takes exactly
    3,000 frames and its classification head averages over all of them, padding included, so a faithful graph
    hears what transformers feeds it. Each row is masked to its length before the padding, which makes a
    padded batch answer as each clip alone. The buffers are computed, not loaded: Whisper checkpoints carry
    no front end, and transformers computes its filters the same way.
    """

    def __init__(self, n_mels: int, n_samples: int, n_fft: int = 400, hop_length: int = 160, sample_rate: int = 16_000):
        super().__init__()
        self.n_samples, self.n_fft, self.hop_length = n_samples, n_fft, hop_length
        self.register_buffer("dft_basis", dft_basis(n_fft), persistent=False)
        self.register_buffer("mel_filters", slaney_mel_filters(n_fft, n_mels, sample_rate).T.contiguous(),
                             persistent=False)  # [n_mels, n_freq]  # fmt: skip

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """audio [batch, samples] → input_features [batch, n_mels, n_samples // hop_length]."""
        audio = audio * length_mask(lengths, audio.shape[1]).to(audio.dtype)
        # Cut or pad to exactly n_samples without a shape-dependent pad amount: cut, append n_samples zeros, cut again.
        zeros = audio.new_zeros(audio.shape[0], self.n_samples)
        audio = torch.cat([audio[:, : self.n_samples], zeros], dim=1)[:, : self.n_samples]
        edge = self.n_fft // 2
        left = torch.flip(audio[:, 1 : edge + 1], dims=[1])  # reflect padding, as torch.stft(center=True)
        right = torch.flip(audio[:, -edge - 1 : -1], dims=[1])
        power = power_spectrum(torch.cat([left, audio, right], dim=1), self.dft_basis, self.hop_length)
        mel = torch.matmul(self.mel_filters, power[:, :, :-1])  # [batch, n_mels, frames]
        log_spec = torch.log10(torch.clamp(mel, min=1e-10))
        floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
        return (torch.maximum(log_spec, floor) + 4.0) / 4.0
