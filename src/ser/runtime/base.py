"""Backend: one interface for every way of running a graph (ONNX Runtime, TensorRT, PyTorch).

After Polygraphy's runners: the base class owns the lifecycle (activate → infer… → deactivate),
checks feeds against the input spec, and times each call, so subclasses only implement
`_activate`, `_infer` and `_deactivate` and cannot drift from the contract.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from ser.bundle import TensorSpec


class BackendError(RuntimeError):
    """A backend used out of order, fed the wrong tensors, or unavailable on this machine."""


class Backend(ABC):
    name: str = "backend"

    def __init__(self, input_spec: tuple[TensorSpec, ...]):
        self._input_spec = {t.name: t for t in input_spec}
        self._active = False
        self.last_latency_s: float | None = None

    @property
    def input_spec(self) -> dict[str, TensorSpec]:
        return dict(self._input_spec)

    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> None:
        if self._active:
            raise BackendError(f"{self.name}: already active")
        self._activate()
        self._active = True

    def deactivate(self) -> None:
        if not self._active:
            raise BackendError(f"{self.name}: not active")
        self._deactivate()
        self._active = False

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on `feeds` (input name → array); returns output name → array."""
        if not self._active:
            raise BackendError(f"{self.name}: call activate() (or use it as a context manager) before infer()")
        self._check_feeds(feeds)
        start = time.perf_counter()
        outputs = self._infer(feeds)
        self.last_latency_s = time.perf_counter() - start
        return outputs

    def logits_each(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Logits [clips, labels] with each clip run alone, unpadded: how a reference answers, and a
        candidate where padding must not enter the comparison."""
        rows = [
            self.infer({"audio": clip[None, :], "lengths": np.array([len(clip)], dtype=np.int64)})["logits"][0]
            for clip in clips
        ]
        return np.stack(rows)

    def _check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        if set(feeds) != set(self._input_spec):
            raise BackendError(f"{self.name}: expected inputs {sorted(self._input_spec)}, got {sorted(feeds)}")
        for name, spec in self._input_spec.items():
            array = feeds[name]
            if not isinstance(array, np.ndarray) or array.dtype != np.dtype(spec.dtype):
                got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
                raise BackendError(f"{self.name}: input {name!r} must be a {spec.dtype} array, got {got}")
            if array.ndim != len(spec.shape):
                raise BackendError(
                    f"{self.name}: input {name!r} must have {len(spec.shape)} dims {spec.shape}, "
                    f"got shape {array.shape}"
                )

    def __enter__(self) -> Backend:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            self.deactivate()

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _deactivate(self) -> None: ...
