"""Random-weight checkpoints whose answers depend on the clip: what top-1 agreement needs to mean anything.

A random classifier head gives near-ties (logits ~1e-3 apart). Scaling its weights up is not enough: the
pooled features of a random encoder share a large common part, so a scaled head mostly adds one fixed
vector to every clip's logits and answers the same label for all of them (wav2vec2-base, scaled to a
logit spread of 4: one label for 60 of 60 clips). Agreement with such a model is 100 % whatever the
quantizer does. So the head's logits are centred over a sample of clips (the bias takes minus their
mean) and then scaled so that the clip-to-clip spread is `spread` units: the answer is decided by what
differs between clips, as a trained head's is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ser.export.calibration import AudioFolderReader
from ser.export.validate import as_backend
from ser.models import get_spec, load_model


def _logits(model: str, folder: Path, clips: tuple[np.ndarray, ...]) -> np.ndarray:
    with as_backend(load_model(model, str(folder)).waveform()) as reference:  # as the gate's reference runs
        return reference.logits_each(clips)


def answers(logits: np.ndarray) -> dict:
    """How the answers spread over the labels: a model that answers one label everywhere shows nothing."""
    counts = np.bincount(logits.argmax(axis=1), minlength=logits.shape[1])
    ordered = np.sort(logits, axis=1)
    return {
        "answer_counts": counts.tolist(),
        "largest_answer_share": round(float(counts.max() / counts.sum()), 3),
        "median_top2_gap": round(float(np.median(ordered[:, -1] - ordered[:, -2])), 3),
    }


def decisive_checkpoint(model: str, size: str, data: str, folder: Path, spread: float = 4.0, clips: int = 32) -> dict:
    """Save random weights at `size` with a centred, scaled last Linear layer to `folder`; returns how the
    answers of the `clips` sample clips spread (see `answers`) and the logit spread reached."""
    torch.manual_seed(0)
    built = get_spec(model).build(size)
    head = [m for m in built.modules() if isinstance(m, torch.nn.Linear)][-1]
    if head.bias is None:
        raise ValueError(f"{model}: its last Linear layer has no bias to centre the logits with")
    built.save_pretrained(folder)
    sample = AudioFolderReader.from_folder(data, clips, seed=99).clips
    logits = _logits(model, folder, sample)
    centred = logits - logits.mean(axis=0)
    factor = spread / float(centred.std())
    with torch.no_grad():
        head.bias -= torch.from_numpy(logits.mean(axis=0)).to(head.bias.dtype)
        head.weight *= factor
        head.bias *= factor
    built.save_pretrained(folder)
    reached = _logits(model, folder, sample)
    return {"logit_spread": round(float(reached.std()), 2), **answers(reached)}
