"""The native TensorRT backend: plan compatibility, engine choice and profile selection without a GPU,
and the backend itself against ONNX Runtime where TensorRT and a GPU are present."""

import re
from dataclasses import asdict, replace

import numpy as np
import pytest

from ser.bundle import Bundle
from ser.runtime.base import BackendError
from ser.runtime.tensorrt import GpuTarget, TensorRTBackend, pick_engine, plan_compatibility, unavailable_reason

H100 = GpuTarget("NVIDIA H100 80GB HBM3", "9.0", "10.1.0")


def engine(target: GpuTarget = H100, **extra) -> dict:
    return {"file": "model.sm90.trt10.1.0.plan", "target": asdict(target), **extra}


@pytest.mark.parametrize(
    ("record", "here", "ok", "message"),
    [
        (engine(), H100, True, ""),
        (engine(), GpuTarget("NVIDIA H100 PCIe", "9.0", "10.1.0"), True, "tuned on NVIDIA H100 80GB HBM3"),
        (engine(), GpuTarget("NVIDIA H100 80GB HBM3", "9.0", "10.2.0"), False, "built with TensorRT 10.1.0"),
        (engine(), GpuTarget("NVIDIA A100", "8.0", "10.1.0"), False, "built for compute capability 9.0"),
        (engine(version_compatible=True), GpuTarget(H100.name, "9.0", "10.3.1"), True, ""),
        (engine(version_compatible=True), GpuTarget(H100.name, "9.0", "10.0.1"), False, "not older"),
        (engine(version_compatible=True), GpuTarget(H100.name, "9.0", "11.0.0"), False, "same major version"),
        (engine(hardware_compatibility="ampere+"), GpuTarget("NVIDIA A10", "8.6", "10.1.0"), True, "tuned on"),
        (engine(hardware_compatibility="ampere+"), GpuTarget("Tesla T4", "7.5", "10.1.0"), False, "Ampere or newer"),
    ],
)
def test_plan_compatibility_rules(record, here, ok, message):
    result = plan_compatibility(record, here)
    assert result.ok is ok
    assert message in (result.warning if ok else result.reason)
    if ok and not message:
        assert result.warning == "" and result.reason == ""


def test_pick_engine_takes_the_first_plan_that_runs_here_or_says_why_none_does():
    a100 = engine(GpuTarget("NVIDIA A100", "8.0", "10.1.0"))
    a100["file"] = "model.sm80.trt10.1.0.plan"
    assert pick_engine((a100, engine()), H100)[0] is not a100
    with pytest.raises(BackendError, match=r"no plan in this bundle runs on NVIDIA H100 80GB HBM3 .*sm80.*9\.0"):
        pick_engine((a100,), H100)
    with pytest.raises(BackendError, match="no TensorRT engine: export it with ser-export --trt"):
        pick_engine((), H100)


@pytest.mark.skipif(unavailable_reason() is None, reason="TensorRT is usable here: the refusal cannot be seen")
def test_backend_without_tensorrt_refuses_to_activate_with_the_reason(tiny_bundle):
    backend = TensorRTBackend.from_bundle(Bundle.load(tiny_bundle("wavlm")))
    with pytest.raises(BackendError, match=r"^tensorrt: (TensorRT is not installed|cuda-python|no CUDA GPU)"):
        backend.activate()
    assert not backend.is_active


@pytest.mark.gpu
@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
@pytest.mark.parametrize("cuda_graph", [False, True], ids=["plain", "cuda-graph"])
def test_backend_matches_onnxruntime_across_profiles_and_threads(tmp_path, tiny_checkpoint, cuda_graph):
    from concurrent.futures import ThreadPoolExecutor

    from ser.export import ExportOptions, export_bundle
    from ser.export.exporter import TensorRTOptions
    from ser.runtime.onnxrt import OnnxRuntimeBackend
    from ser.runtime.recognizer import pad_batch
    from tests.conftest import speech_like

    options = ExportOptions("wav2vec2", checkpoint=str(tiny_checkpoint("wav2vec2")), optimize=False,
                            trt=TensorRTOptions(max_batch=4, max_seconds=8))  # fmt: skip
    bundle = export_bundle(options, tmp_path / "b")
    cases = [pad_batch([speech_like(s, seed=i) for i, s in enumerate(lengths)]) for lengths in ((1.0,), (3.0, 6.5))]
    feeds = [{"audio": audio, "lengths": lengths} for audio, lengths in cases]
    with OnnxRuntimeBackend(bundle.onnx_path, bundle.manifest.inputs) as reference:
        expected = [reference.infer(f)["logits"] for f in feeds]
    with TensorRTBackend.from_bundle(bundle, cuda_graph=cuda_graph) as backend:
        for _ in range(2):  # the second pass replays captured graphs
            for f, want in zip(feeds, expected, strict=True):
                assert np.abs(backend.infer(f)["logits"] - want).max() < 1e-3
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda f: backend.infer(f)["logits"], feeds * 4))
        for got, want in zip(results, expected * 4, strict=True):
            assert np.abs(got - want).max() < 1e-3


def test_auto_takes_tensorrt_only_where_it_runs_and_explicit_choices_are_kept(tiny_bundle):
    from ser.runtime.onnxrt import OnnxRuntimeBackend, available_devices, device_problem
    from ser.runtime.recognizer import BACKENDS, backend_problem, open_backend

    bundle = Bundle.load(tiny_bundle("wavlm"))
    with_plan = Bundle(bundle.path, replace(bundle.manifest, engines=(engine(profiles=[]),)))
    auto = open_backend(with_plan)
    if unavailable_reason() is not None:  # no TensorRT here: ONNX Runtime, on CUDA where onnxruntime-gpu sees one
        assert isinstance(auto, OnnxRuntimeBackend)
        assert auto.device == ("cuda" if "cuda" in available_devices() else "cpu")
    assert isinstance(open_backend(bundle, "tensorrt"), TensorRTBackend)
    assert open_backend(with_plan, "onnxruntime-cpu").name == "onnxruntime-cpu", "a named backend is what runs"
    provider = open_backend(bundle, "onnxruntime-tensorrt")
    assert provider.name == "onnxruntime-tensorrt"
    if (problem := device_problem("tensorrt")) is not None:
        assert backend_problem("onnxruntime-tensorrt") == problem  # the one check, the same reason
        with pytest.raises(BackendError, match=re.escape(problem)):
            provider.activate()
    if (reason := unavailable_reason()) is not None:
        assert backend_problem("tensorrt") == reason
    with pytest.raises(BackendError, match="unknown backend 'tpu'"):
        open_backend(bundle, "tpu")
    assert backend_problem("onnxruntime") == f"unknown backend 'onnxruntime'; choose one of {', '.join(BACKENDS)}"
