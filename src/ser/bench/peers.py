"""OpenVINO, the system a CPU user would pick instead of ser, as a peer backend of the harness.

Converted from the same checkpoint as every other row (`openvino.convert_model` traces ser's
waveform module, dynamic batch and length), saved as OpenVINO IR in the run folder, and for INT8
quantized by NNCF's post-training quantization on the suite's calibration clips (the transformer
preset for the transformer families). Inference precision is pinned to f32: on CPUs with AVX-512 BF16
or AMX OpenVINO's default would quietly run the "FP32" row in bfloat16.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ser.bundle import graph_signature
from ser.runtime.base import Backend, BackendError
from ser.runtime.openvino import compile_for_cpu

PRECISIONS = ("fp32", "int8-static")
IR_NAME = "model.xml"


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install 'ser[peers]')"
    return None


def export_openvino(
    model: str,
    checkpoint: str | None,
    size: str | None,
    precision: str,
    calibration: str | Path,
    calibration_clips: int,
    out: Path,
    seed: int = 0,
) -> dict[str, Any]:
    """Convert the checkpoint (random weights at `size` without one) to OpenVINO IR in `out`; for
    int8-static, quantized with NNCF on `calibration_clips` clips of `calibration`. Returns the record."""
    import openvino as ov
    import torch

    from ser.export.calibration import AudioFolderReader
    from ser.models import load_model

    if precision not in PRECISIONS:
        raise ValueError(f"openvino: precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    loaded = load_model(model, checkpoint, size, random_init=checkpoint is None)
    module = loaded.waveform().eval()
    example = (torch.zeros(2, 16000), torch.tensor([16000, 12000]))
    with torch.no_grad():
        converted = ov.convert_model(module, example_input=example)
    record: dict[str, Any] = {"converter": f"openvino {ov.__version__}"}
    if precision == "int8-static":
        import nncf

        reader = AudioFolderReader.from_folder(calibration, calibration_clips, seed)
        items = [(feeds["audio"], feeds["lengths"]) for feeds in reader]
        transformer = loaded.spec.name != "resnet18"
        converted = nncf.quantize(
            converted,
            nncf.Dataset(items),
            subset_size=len(items),
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
        )
        record |= {"quantizer": f"nncf {nncf.__version__}", "calibration_clips": len(items),
                   "model_type": "transformer" if transformer else "default"}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(converted, out / IR_NAME, compress_to_fp16=False)
    info = {"labels": list(loaded.labels), "answer": loaded.answer.kind, "precision": precision, **record}
    (out / "peer.json").write_text(json.dumps(info))
    return record


class OpenVinoBackend(Backend):
    """An IR folder written by `export_openvino`, compiled for this CPU with `threads` threads."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        self.folder = Path(folder)
        info = json.loads((self.folder / "peer.json").read_text())
        self.labels: tuple[str, ...] = tuple(info["labels"])
        self.answer: str = info.get("answer", "categories")
        super().__init__(graph_signature(len(self.labels))[0])
        self.name = f"openvino-{info['precision']}"
        self.threads = threads
        self._compiled = None

    def _activate(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise BackendError(f"{self.name}: {reason}")
        self._compiled = compile_for_cpu(self.folder / IR_NAME, self.threads)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._compiled is not None
        result = self._compiled([feeds["audio"], feeds["lengths"]])
        return {"logits": np.asarray(result[0], dtype=np.float32)}

    def _deactivate(self) -> None:
        self._compiled = None

    @property
    def bytes(self) -> int:
        return sum(path.stat().st_size for path in self.folder.iterdir() if path.suffix in (".xml", ".bin"))
