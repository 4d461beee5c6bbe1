import pytest
import torch

from ser.models import load_model
from ser.models.attention import fused_attention


@pytest.mark.parametrize("name", ["wav2vec2", "hubert", "wavlm"])
def test_fused_attention_matches_the_original_on_a_padded_batch(tiny_checkpoint, name):
    module = load_model(name, str(tiny_checkpoint(name))).waveform()
    audio = torch.randn(3, 20_000) * 0.1
    lengths = torch.tensor([20_000, 13_001, 4_000])
    with torch.no_grad():
        expected = module(audio, lengths)
        with fused_attention(module) as swapped:
            got = module(audio, lengths)
        after = module(audio, lengths)
    assert swapped == 2
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, expected, atol=0, rtol=0)
    assert not any("forward" in vars(m) or "torch_multi_head_self_attention" in vars(m) for m in module.modules())


def test_models_without_attention_are_left_alone(tiny_checkpoint):
    module = load_model("resnet18", str(tiny_checkpoint("resnet18"))).waveform()
    with fused_attention(module) as swapped:
        assert swapped == 0
