"""One conformance test for every backend this machine can run; the others skip with the reason."""

import numpy as np
import pytest

from ser.bundle import Bundle
from ser.runtime.base import BackendError
from ser.runtime.onnxrt import PROVIDERS, OnnxRuntimeBackend, available_devices, device_problem
from ser.runtime.openvino import OpenVinoBackend
from ser.runtime.openvino import unavailable_reason as openvino_unavailable
from ser.runtime.recognizer import pad_batch
from tests.conftest import speech_like


def _cuda_reason() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no CUDA GPU on this machine"


BACKENDS = [
    pytest.param("onnxruntime-cpu", id="onnxruntime-cpu"),
    pytest.param(
        "onnxruntime-cuda",
        id="onnxruntime-cuda",
        marks=pytest.mark.skipif(
            "cuda" not in available_devices(), reason="onnxruntime has no CUDAExecutionProvider here"
        ),
    ),
    pytest.param(
        "openvino-cpu",
        id="openvino-cpu",
        marks=pytest.mark.skipif(openvino_unavailable() is not None, reason=str(openvino_unavailable())),
    ),
    pytest.param("pytorch-cpu", id="pytorch-cpu"),
    pytest.param(
        "pytorch-cuda",
        id="pytorch-cuda",
        marks=pytest.mark.skipif(_cuda_reason() is not None, reason=str(_cuda_reason())),
    ),
]


@pytest.fixture
def make_backend(tiny_bundle, tiny_checkpoint):
    def make(kind: str):
        bundle = Bundle.load(tiny_bundle("wav2vec2"))
        engine, device = kind.split("-")
        if engine == "onnxruntime":
            return OnnxRuntimeBackend(bundle.onnx_path, bundle.manifest.inputs, device=device, threads=2)
        if engine == "openvino":
            return OpenVinoBackend(bundle.onnx_path, bundle.manifest.inputs, threads=2)
        from ser.models import load_model
        from ser.models.reference import TorchBackend

        return TorchBackend(load_model("wav2vec2", tiny_checkpoint("wav2vec2")).waveform(), 7, device=device)

    return make


def _feeds():
    audio, lengths = pad_batch([speech_like(n / 16_000, seed=n) for n in (16_000, 7_001, 11_111)])
    return {"audio": audio, "lengths": lengths}


@pytest.mark.parametrize("kind", BACKENDS)
def test_backend_conformance(make_backend, kind):
    backend = make_backend(kind)
    assert backend.name == kind
    assert set(backend.input_spec) == {"audio", "lengths"}
    with pytest.raises(BackendError, match="activate"):
        backend.infer(_feeds())
    with backend:
        with pytest.raises(BackendError, match="already active"):
            backend.activate()
        outputs = backend.infer(_feeds())
        assert set(outputs) == {"logits"}
        assert outputs["logits"].shape == (3, 7) and outputs["logits"].dtype == np.float32
        assert backend.last_latency_s is not None and backend.last_latency_s > 0
        with pytest.raises(BackendError, match="expected inputs"):
            backend.infer({"audio": _feeds()["audio"]})
        with pytest.raises(BackendError, match="'lengths' must be a int64 array"):
            backend.infer({**_feeds(), "lengths": _feeds()["lengths"].astype(np.int32)})
        with pytest.raises(BackendError, match="'audio' must have 2 dims"):
            backend.infer({**_feeds(), "audio": _feeds()["audio"][0]})
    assert not backend.is_active


@pytest.mark.parametrize("kind", BACKENDS)
def test_backends_agree_with_each_other(make_backend, kind):
    with make_backend("onnxruntime-cpu") as reference, make_backend(kind) as backend:
        expected = reference.infer(_feeds())["logits"]
        np.testing.assert_allclose(backend.infer(_feeds())["logits"], expected, atol=1e-3)


def test_unknown_device_is_refused(tiny_bundle):
    bundle = Bundle.load(tiny_bundle("wav2vec2"))
    with pytest.raises(BackendError, match="unknown device 'tpu'"):
        OnnxRuntimeBackend(bundle.onnx_path, bundle.manifest.inputs, device="tpu")


def test_a_device_is_available_only_where_its_provider_runs():
    import onnxruntime as ort

    assert device_problem("cpu") is None
    for device in ("cuda", "tensorrt"):
        problem = device_problem(device)
        assert (problem is None) == (device in available_devices())
        if PROVIDERS[device] not in ort.get_available_providers():
            assert problem == f"this onnxruntime build has no {PROVIDERS[device]} (install onnxruntime-gpu)"


def test_a_session_that_did_not_get_its_provider_is_refused(tiny_bundle, monkeypatch):
    """onnxruntime-gpu lists CUDA wherever it is installed, and a session whose provider cannot start
    runs on the CPU: that must not pass for a CUDA session."""
    from ser.runtime import onnxrt

    if "cuda" in available_devices():
        pytest.skip("the CUDA provider really runs here")
    monkeypatch.setattr(onnxrt, "device_problem", lambda device: None)  # as if its library had loaded
    bundle = Bundle.load(tiny_bundle("wavlm"))
    backend = OnnxRuntimeBackend(bundle.onnx_path, bundle.manifest.inputs, device="cuda")
    with pytest.raises(BackendError, match="could not start its CUDAExecutionProvider and would run on CPUExecution"):
        backend.activate()
    assert not backend.is_active
