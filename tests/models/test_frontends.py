import pytest
import torch
from transformers import Wav2Vec2Config
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2GroupNormConvLayer

from ser.models.frontends import MaskedGroupNormConvLayer
from tests.conftest import speech_like


def _first_layer(conv_bias: bool) -> Wav2Vec2GroupNormConvLayer:
    """transformers' own first conv layer at wav2vec2-base's shape (512 channels, kernel 10, stride 5),
    with a GroupNorm affine and conv bias that are not the identity."""
    torch.manual_seed(0)
    layer = Wav2Vec2GroupNormConvLayer(Wav2Vec2Config(conv_bias=conv_bias), layer_id=0).eval()
    with torch.no_grad():
        layer.layer_norm.weight.normal_(1.0, 0.5)
        layer.layer_norm.bias.normal_(0.0, 0.5)
    return layer


WAVEFORMS = {
    "speech": lambda n: torch.from_numpy(speech_like(n / 16_000)),
    "speech on a DC offset": lambda n: torch.from_numpy(speech_like(n / 16_000)) * 0.05 + 0.9,
    "near silence": lambda n: torch.randn(n) * 1e-4,
    "digital silence": lambda n: torch.zeros(n),
}


@pytest.mark.parametrize("conv_bias", [False, True])
@pytest.mark.parametrize("kind", list(WAVEFORMS))
def test_masked_group_norm_matches_transformers_layer_on_each_clip_alone(kind, conv_bias):
    """The statistics taken from the waveform's windows give transformers' GroupNorm, row by row of a padded
    batch, also where the mean dwarfs the spread (a DC offset) and where there is no spread at all."""
    original = _first_layer(conv_bias)
    masked = MaskedGroupNormConvLayer(_first_layer(conv_bias))
    lengths = [16_000, 9_001, 4_000]
    clips = [WAVEFORMS[kind](n) for n in lengths]
    batch = torch.zeros(len(clips), 1, max(lengths))
    for row, clip in zip(batch, clips, strict=True):
        row[0, : len(clip)] = clip
    masked.frame_lengths = masked.output_lengths(torch.tensor(lengths))
    with torch.no_grad():
        got = masked(batch)
        for row, clip in enumerate(clips):
            expected = original(clip[None, None])
            # float32 cancellation: on the DC offset the normalised output is a small difference of large
            # numbers (transformers' own layer is 5e-5 from a float64 GroupNorm there, ser's 1.5e-4)
            torch.testing.assert_close(got[row : row + 1, :, : expected.shape[2]], expected, atol=5e-4, rtol=1e-3)


def test_masked_group_norm_refuses_a_layer_it_cannot_mask():
    layer = _first_layer(False)
    layer.conv = torch.nn.Conv1d(1, 512, 10, 5, padding=2)
    with pytest.raises(ValueError, match="no padding"):
        MaskedGroupNormConvLayer(layer)
