import pytest
import torch

from ser.models import REGISTRY, load_model
from ser.models.attention import fused_attention

TRANSFORMERS = [name for name, spec in REGISTRY.items() if spec.patches.attention is not None]


def test_every_family_but_resnet_declares_its_attention():
    assert set(TRANSFORMERS) == set(REGISTRY) - {"resnet18"}


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_fused_attention_matches_the_original_on_a_padded_batch(tiny_checkpoint, name):
    """The class and method the family's spec names are the ones its layers run: every layer swapped."""
    module = load_model(name, str(tiny_checkpoint(name))).waveform()
    audio = torch.randn(3, 20_000) * 0.1
    lengths = torch.tensor([20_000, 13_001, 4_000])
    with torch.no_grad():
        expected = module(audio, lengths)
        with fused_attention(module) as swapped:
            got = module(audio, lengths)
        after = module(audio, lengths)
    assert swapped == module.model.config.num_hidden_layers == 2
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, expected, atol=0, rtol=0)
    assert not any(module.patches.attention_method in vars(m) for m in module.modules())


def test_models_without_attention_are_left_alone(tiny_checkpoint):
    module = load_model("resnet18", str(tiny_checkpoint("resnet18"))).waveform()
    with fused_attention(module) as swapped:
        assert swapped == 0
