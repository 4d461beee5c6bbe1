"""The peers a user would pick instead of ser, run for real: OpenVINO (FP32, NNCF INT8) converted from the
same checkpoint, and PyTorch's own dynamic INT8, each held against the checkpoint's library class."""

import numpy as np
import pytest
import torch

from ser.bench.peers import OpenVinoBackend, export_openvino
from ser.export.validate import validate
from ser.models import load_model
from ser.models.reference import TorchBackend, original_model
from ser.runtime.base import BackendError

pytest.importorskip("openvino", reason="the peers extra is not installed (pip install 'ser[peers]')")


@pytest.mark.parametrize("model", ["wav2vec2", "hubert", "wavlm", "resnet18"])
def test_openvino_fp32_answers_as_the_checkpoints_own_class(tmp_path, tiny_checkpoint, model):
    checkpoint = str(tiny_checkpoint(model))
    record = export_openvino(model, checkpoint, None, "fp32", tmp_path, 1, tmp_path / "ir")
    assert record["converter"].startswith("openvino ") and (tmp_path / "ir" / "model.xml").is_file()
    reference = original_model(load_model(model, checkpoint))  # the library's own class and feature extractor
    with OpenVinoBackend(tmp_path / "ir", threads=1) as backend:
        report = validate(backend, reference, tolerance=1e-3)  # padded batches of several lengths
    assert report.passed and report.top1_agreement == 1.0, report


def test_openvino_int8_is_quantized_by_nncf_on_real_clips(tmp_path, tiny_checkpoint, synth_corpus):
    checkpoint = str(tiny_checkpoint("wavlm"))
    record = export_openvino("wavlm", checkpoint, None, "int8-static", synth_corpus, 12, tmp_path / "ir")
    assert record["quantizer"].startswith("nncf ") and record["calibration_clips"] == 12
    assert record["model_type"] == "transformer"
    import openvino as ov

    ops = {op.get_type_name() for op in ov.Core().read_model(tmp_path / "ir" / "model.xml").get_ordered_ops()}
    assert "FakeQuantize" in ops or "FakeConvert" in ops, sorted(ops)
    with OpenVinoBackend(tmp_path / "ir", threads=1) as backend:
        report = validate(backend, load_model("wavlm", checkpoint).waveform(), tolerance=None)
    assert np.isfinite(report.max_abs_logit_error) and report.max_abs_logit_error > 0, "INT8 is not bit-exact"


@pytest.mark.parametrize(("model", "quantized"), [("wav2vec2", 15), ("wavlm", 9)])
def test_pytorch_dynamic_int8_quantizes_the_linear_layers(tiny_checkpoint, model, quantized):
    # WavLM's attention hands its projection weights to F.multi_head_attention_forward: those stay FP32.
    module = load_model(model, str(tiny_checkpoint(model))).waveform()
    with TorchBackend(module, 7, precision="int8-dynamic") as backend:
        count = sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in backend._run.modules())
        report = validate(backend, module, tolerance=None)
    assert count == quantized
    assert 0 < report.max_abs_logit_error < 1, report
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in module.modules()), "a copy"
    with pytest.raises(BackendError, match="CPU only"):
        TorchBackend(module, 7, device="cuda", precision="int8-dynamic")
