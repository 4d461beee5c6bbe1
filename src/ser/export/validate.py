"""Check an exported graph against the PyTorch model it came from.

The graph runs padded batches through a real Backend; the reference is the PyTorch model on each
clip alone, unpadded. One comparison therefore checks both the export and that padding does not
change answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ser.data.signals import synthetic_voice
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


class ExportToleranceError(RuntimeError):
    """An exported graph whose logits differ from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class ValidationReport:
    backend: str
    cases: tuple[tuple[int, ...], ...]
    max_abs_logit_error: float
    mean_abs_logit_error: float
    top1_agreement: float  # fraction of clips whose top label matches PyTorch's
    tolerance: float | None  # None: recorded only (INT8 graphs answer to the accuracy gate instead)
    reference: str = "pytorch"  # what the logits were held against: ser's PyTorch model, or the library's

    @property
    def passed(self) -> bool:
        return self.tolerance is None or self.max_abs_logit_error <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def reference_logits(module: nn.Module, clip: np.ndarray) -> np.ndarray:
    """The PyTorch model's logits for one unpadded clip, shape [labels]."""
    with torch.no_grad():
        audio = torch.from_numpy(clip)[None]
        return module(audio, torch.tensor([len(clip)])).numpy()[0]


def validate(
    backend: Backend, reference: nn.Module, tolerance: float | None, cases: Sequence[tuple[int, ...]] = CASES
) -> ValidationReport:
    """Compare `backend` (active) on padded batches with `reference` clip by clip."""
    errors, agree = [], []
    for case_index, lengths in enumerate(cases):
        clips = [synthetic_voice(n, seed=100 * case_index + row) for row, n in enumerate(lengths)]
        audio, lengths_array = pad_batch(clips)
        got = backend.infer({"audio": audio, "lengths": lengths_array})["logits"]
        expected = np.stack([reference_logits(reference, clip) for clip in clips])
        errors.append(np.abs(got - expected).ravel())
        agree.extend(got.argmax(axis=1) == expected.argmax(axis=1))
    error = np.concatenate(errors)
    return ValidationReport(
        backend=backend.name,
        cases=tuple(tuple(c) for c in cases),
        max_abs_logit_error=float(error.max()),
        mean_abs_logit_error=float(error.mean()),
        top1_agreement=float(np.mean(agree)),
        tolerance=tolerance,
        reference=getattr(reference, "reference", "pytorch"),
    )
