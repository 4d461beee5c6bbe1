"""The CPU's INT8 class, read from /proc/cpuinfo-format text, and the load-time check of INT8 bundles,
with the CPU detection stood in for by cpuinfo files of the two kinds of CPU."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from ser.export import ExportOptions, Gate, Int8Options, export_bundle
from ser.runtime import BundleError, EmotionRecognizer
from ser.runtime.cpu import cpu_features, int8_mismatch

VNNI = (
    "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni avx_vnni\n"
)
AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC 7R13\nflags\t\t: fpu sse2 avx2 fma\n"
AVX512_NO_VNNI = "model name\t: Intel Xeon Platinum 8175M\nflags\t\t: avx2 avx512f avx512bw\n"


def _cpuinfo(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_int8_class_comes_from_the_flags(tmp_path):
    vnni = cpu_features(_cpuinfo(tmp_path, VNNI, "vnni"))
    assert vnni.model == "AMD EPYC 9R14" and vnni.numerics == "exact-int32"
    assert vnni.int8 == {"avx2": True, "avx512bw": True, "avx512_vnni": True, "avx_vnni": True, "amx_int8": False}
    assert cpu_features(_cpuinfo(tmp_path, AVX2, "avx2")).numerics == "saturating-int16"
    assert cpu_features(_cpuinfo(tmp_path, AVX512_NO_VNNI, "skx")).numerics == "saturating-int16"


def test_only_a_non_portable_bundle_on_another_class_is_a_mismatch(tmp_path):
    vnni, avx2 = (cpu_features(_cpuinfo(tmp_path, t, n)) for t, n in ((VNNI, "v"), (AVX2, "a")))
    gated_on_vnni = {"target": "vnni", "cpu": vnni.to_dict()}
    assert int8_mismatch(gated_on_vnni, vnni) is None
    reason = int8_mismatch(gated_on_vnni, avx2)
    assert reason is not None and "AMD EPYC 9R14 (exact-int32" in reason and "saturating-int16" in reason
    assert int8_mismatch({**gated_on_vnni, "target": "portable"}, avx2) is None
    assert int8_mismatch({}, avx2) is None  # FP32 bundles, and INT8 bundles from before it was recorded


@pytest.fixture(scope="module")
def int8_bundles(tiny_checkpoint, synth_corpus, tmp_path_factory):
    """target → a static INT8 bundle of the tiny wav2vec2, gated (openly) on this machine's CPU."""
    out = tmp_path_factory.mktemp("int8-targets")
    bundles = {}
    for target in ("portable", "vnni"):
        options = ExportOptions(
            checkpoint=str(tiny_checkpoint("wav2vec2")),
            int8=Int8Options("static", target=target),
            calibration_data=str(synth_corpus),
            calibration_clips=12,
            eval_clips=12,
            gate=Gate(min_agreement=0.0, max_f1_drop=None),
        )
        bundles[target] = export_bundle(options, out / target)
    return bundles


def test_the_manifest_records_the_target_the_cpu_and_onnxruntime(int8_bundles):
    import onnxruntime

    for target, bundle in int8_bundles.items():
        quantization = bundle.manifest.quantization
        assert quantization["target"] == target and quantization["reduce_range"] == (target == "portable")
        assert quantization["cpu"] == cpu_features().to_dict()
        assert quantization["onnxruntime"] == onnxruntime.__version__


def test_loading_elsewhere_warns_once_and_strict_refuses(int8_bundles, tmp_path, monkeypatch, caplog):
    here = cpu_features()
    other = AVX2 if here.numerics == "exact-int32" else VNNI
    monkeypatch.setenv("SER_CPUINFO", str(_cpuinfo(tmp_path, other, "other")))
    caplog.set_level(logging.WARNING, logger="ser")
    with EmotionRecognizer.load(int8_bundles["vnni"].path, backend="onnxruntime-cpu") as recognizer:
        assert recognizer.cpu_warning is not None and "its answers can differ" in recognizer.cpu_warning
    assert caplog.text.count("its answers can differ") == 1
    with pytest.raises(BundleError, match="its accuracy gate ran on"):
        EmotionRecognizer.load(int8_bundles["vnni"].path, backend="onnxruntime-cpu", strict_cpu=True)
    portable = int8_bundles["portable"].path
    with EmotionRecognizer.load(portable, backend="onnxruntime-cpu", strict_cpu=True) as recognizer:
        assert recognizer.cpu_warning is None  # 7-bit weights: the same answers on either kind of CPU


def test_ser_infer_and_ser_serve_surface_it(int8_bundles, tmp_path, write_clip, monkeypatch):
    from tests.serve.conftest import running_service

    here = cpu_features()
    other = _cpuinfo(tmp_path, AVX2 if here.numerics == "exact-int32" else VNNI, "other")
    clip = write_clip("a.wav")
    script = Path(sys.executable).parent / "ser-infer"
    env_other = {**__import__("os").environ, "SER_CPUINFO": str(other)}
    warned = subprocess.run([script, int8_bundles["vnni"].path, clip], capture_output=True, text=True, env=env_other)
    assert warned.returncode == 0 and "its answers can differ" in warned.stderr
    strict = subprocess.run([script, int8_bundles["vnni"].path, clip, "--strict-cpu"], capture_output=True,
                            text=True, env=env_other)  # fmt: skip
    assert strict.returncode == 2 and "its accuracy gate ran on" in strict.stderr

    from ser.serve import ServeSettings

    monkeypatch.setenv("SER_CPUINFO", str(other))
    with running_service(ServeSettings(bundle=str(int8_bundles["vnni"].path), threads=1)) as client:
        ready = client.get("/readyz").json()
        metrics = client.get("/metrics").text
    assert "its answers can differ" in ready["warnings"][0]
    assert "ser_int8_cpu_mismatch 1.0" in metrics


def _u8s8_products(weight: int) -> tuple:
    """ONNX Runtime's own u8s8 kernel (MatMulInteger, constant int8 weights as in an exported graph) on
    activations of 255 against weights of ±`weight`, and the exact int32 answer."""
    import numpy as np
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = rng.choice(np.array([weight, -weight], np.int8), size=(768, 64))
    activations = np.full((4, 768), 255, np.uint8)
    activations[1] = rng.integers(0, 256, 768)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "u8s8",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, 768])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, 64])],
        [numpy_helper.from_array(weights, "B")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"A": activations})[0], activations.astype(np.int64) @ weights.astype(np.int64)


def test_onnxruntime_s_kernels_on_this_cpu_compute_as_its_class_says():
    """The classification checked against the real kernels: 7-bit weights (the portable target) are exact
    on every class; full 8-bit weights are exact with VNNI and saturate without it."""
    import numpy as np

    portable, exact = _u8s8_products(64)
    np.testing.assert_array_equal(portable, exact)
    full, exact = _u8s8_products(127)
    numerics = cpu_features().numerics
    if numerics == "exact-int32":
        np.testing.assert_array_equal(full, exact)
    elif numerics == "saturating-int16":
        assert (full != exact).any(), "u8s8 pairs of 255 x 127 should saturate at int16 on this CPU"
    else:
        pytest.skip(f"no x86-64 INT8 class on this CPU ({numerics})")


def test_a_portable_bundle_s_weights_fit_seven_bits(int8_bundles):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    def largest_weight(bundle) -> int:
        model = onnx.load(bundle.onnx_path)
        int8 = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
        return max(int(np.abs(w.astype(np.int32)).max()) for w in int8 if w.size > 1)

    assert largest_weight(int8_bundles["portable"]) <= 64  # 255 x 64 x 2 = 32,640: within int16
    assert largest_weight(int8_bundles["vnni"]) > 64
