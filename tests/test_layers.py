"""The dependency arrows of the README's architecture section, held for every import in src/ser (those
inside functions too): a module imports its own package or a lower layer, never a peer or a higher one."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
# Lowest first. `ser` itself is only the version and the lazy public face (ser.load, ser.export).
LAYERS = (
    ("ser", "ser.labels", "ser.staging", "ser.answer"),
    ("ser.audio", "ser.bundle", "ser.metrics"),
    ("ser.runtime", "ser.data"),
    ("ser.serve", "ser.models", "ser.batch"),
    ("ser.training", "ser.export"),
    ("ser.bench",),
    ("ser.cli",),
)


def unit(module: str) -> tuple[int, str]:
    """The layer and the unit (package, or top-level module) `module` belongs to."""
    best = max((p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")), key=len)
    return next(i for i, layer in enumerate(LAYERS) if best in layer), best


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "ser" or name.startswith("ser.")]


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SRC)) for p in MODULES])
def test_imports_point_down(path):
    name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
    if name == "ser":
        return  # the public face imports its stages lazily, by design
    layer, own = unit(name)
    for line, target in imports(path):
        target_layer, target_unit = unit(target)
        assert target_unit == own or target_layer < layer, (
            f"{path.relative_to(SRC)}:{line} imports {target} ({target_unit}, layer {target_layer}) "
            f"from {own} (layer {layer})"
        )


def test_every_module_has_a_layer():
    names = {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__") for p in MODULES}
    assert all(unit(name) for name in names)
