"""Check an exported graph against the PyTorch model it came from.

The graph runs padded batches through a real Backend; the reference is the PyTorch model on each
clip alone, unpadded. One comparison therefore checks both the export and that padding does not
change answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

from ser.data.signals import synthetic_voice
from ser.metrics import Agreement
from ser.models.reference import TorchBackend
from ser.runtime.base import Backend
from ser.runtime.recognizer import pad_batch

# Each case is one batch, given as its rows' lengths in samples: single clips of even and odd
# length, the shortest clip the graph accepts, equal-length batches, and ragged padded batches.
CASES: tuple[tuple[int, ...], ...] = (
    (16_000,),
    (12_345,),
    (401,),
    (8_000, 8_000),
    (16_000, 9_001, 24_011, 4_000),
    (3_217, 20_000, 401),
)


# The CCC a dimensional export must keep against PyTorch over the validation clips, per precision (FP16 keeps
# about three significant digits; INT8 answers to the accuracy gate instead).
MIN_CCC = {"fp32": 0.999, "fp16": 0.99}


class ExportToleranceError(RuntimeError):
    """An exported graph whose logits differ from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class ValidationReport:
    backend: str
    cases: tuple[tuple[int, ...], ...]
    agreement: Agreement  # the candidate on padded batches against the reference clip by clip
    tolerance: float | None  # None: recorded only (INT8 graphs answer to the accuracy gate instead)
    reference: str = "pytorch"  # what the logits were held against: ser's PyTorch model, or the library's
    min_ccc: float | None = None  # dimensions: the CCC every dimension must reach over the cases' clips

    @property
    def max_abs_logit_error(self) -> float:
        return self.agreement.max_abs_logit_error

    @property
    def top1_agreement(self) -> float:
        return self.agreement.top1_agreement

    @property
    def passed(self) -> bool:
        if self.tolerance is None:
            return True
        concordant = self.min_ccc is None or (self.agreement.min_ccc or 0.0) >= self.min_ccc
        return self.max_abs_logit_error <= self.tolerance and concordant

    def describe(self) -> str:
        """The miss, for the error that refuses the export."""
        need = f"tolerance {self.tolerance:g}" + (f", CCC ≥ {self.min_ccc}" if self.min_ccc is not None else "")
        return f"by {self.max_abs_logit_error:.3g} ({need}; {self.agreement.headline()})"

    def to_dict(self) -> dict[str, Any]:
        fields = {key: value for key, value in asdict(self).items() if key != "agreement"}
        return {**fields, **self.agreement.to_dict(), "passed": self.passed}


def as_backend(reference: Backend | nn.Module) -> Backend:
    """The reference as a Backend, so it runs through the same interface as what it is compared with."""
    return reference if isinstance(reference, Backend) else TorchBackend(reference)


def validate(
    backend: Backend,
    reference: Backend | nn.Module,
    tolerance: float | None,
    cases: Sequence[tuple[int, ...]] = CASES,
    min_ccc: float | None = None,
) -> ValidationReport:
    """Compare `backend` (active) on padded batches with `reference` (a Backend, or a PyTorch module run as
    one) clip by clip, unpadded. `min_ccc` (dimensional models) also asks each dimension's CCC over the clips."""
    reference_backend = as_backend(reference)
    got, expected = [], []
    with contextlib.ExitStack() as stack:
        if not reference_backend.is_active:
            stack.enter_context(reference_backend)
        for case_index, lengths in enumerate(cases):
            clips = [synthetic_voice(n, seed=100 * case_index + row) for row, n in enumerate(lengths)]
            audio, lengths_array = pad_batch(clips)
            got.append(backend.infer({"audio": audio, "lengths": lengths_array})["logits"])
            expected.append(reference_backend.logits_each(clips))
    return ValidationReport(
        backend=backend.name,
        cases=tuple(tuple(c) for c in cases),
        agreement=Agreement.of(np.concatenate(expected), np.concatenate(got), dimensions=min_ccc is not None),
        tolerance=tolerance,
        reference=getattr(reference, "reference", "pytorch"),
        min_ccc=min_ccc,
    )
