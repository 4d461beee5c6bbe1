import pytest

from ser.models import REGISTRY, get_spec
from tests.conftest import TINY_MODELS


def test_every_registered_model_has_a_tiny_fixture():
    assert set(REGISTRY) == set(TINY_MODELS)
    for spec in REGISTRY.values():
        assert "tiny" in spec.sizes, spec.name


def test_the_registry_names_each_head_as_its_class_does():
    # The registry is data (no torch on import); the names and model types it holds must be the classes' own.
    for spec in REGISTRY.values():
        for head in spec.heads:
            cls = head.load()
            assert cls.__name__ == head.name and cls.config_class.model_type == head.model_type, head
        assert spec.model_class is spec.heads[0].load()


@pytest.mark.parametrize(
    "name, size, hidden, layers",
    [("wav2vec2", "base", 768, 12), ("hubert", "large", 1024, 24), ("wavlm", "base", 768, 12)],
)
def test_default_sizes_are_the_published_shapes(name, size, hidden, layers):
    spec = get_spec(name)
    assert spec.default_size == size
    config = spec.config(size)
    assert (config.hidden_size, config.num_hidden_layers) == (hidden, layers)
    assert config.num_labels == 7 and config.id2label[0] == "angry"


def test_size_is_recognised_from_a_config():
    spec = get_spec("hubert")
    assert spec.size_of(spec.config("large")) == "large"
    assert spec.size_of(spec.config("tiny")) == "tiny"


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown model 'bert'"):
        get_spec("bert")
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        get_spec("wavlm").config("huge")
