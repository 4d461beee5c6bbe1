"""TensorRT: everything that can be checked without a GPU (what the parser takes, profiles, plan
compatibility, options), and the engine build itself where TensorRT and a GPU are present."""

import json
from dataclasses import asdict

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ser.bundle import Bundle, Manifest
from ser.export import ExportOptions, Gate, Int8Options, export_bundle
from ser.export.exporter import TensorRTOptions
from ser.export.onnx import export_onnx
from ser.export.tensorrt import SUPPORTED_OPS, TensorRTError, parser_problems, plan_profiles, tensorrt_ready
from ser.models import load_model
from ser.runtime.base import BackendError
from ser.runtime.tensorrt import GpuTarget, Profile, select_profile


def _tensorrt_reason() -> str | None:
    try:
        tensorrt_ready()
    except TensorRTError as error:
        return str(error)
    return None


needs_tensorrt = pytest.mark.skipif(_tensorrt_reason() is not None, reason=str(_tensorrt_reason()))


@pytest.mark.parametrize("name", ["wav2vec2", "hubert", "wavlm", "whisper", "resnet18"])
def test_every_plain_graph_is_one_tensorrt_parses_and_the_fused_one_is_not(name, tmp_path, tiny_bundle):
    plain = tmp_path / "plain.onnx"
    export_onnx(load_model(name, None, "tiny", random_init=True).waveform(), plain, fuse_attention=False)
    assert parser_problems(onnx.load(str(plain))) == []
    fused = parser_problems(onnx.load(str(Bundle.load(tiny_bundle(name)).onnx_path)))
    assert all(problem.startswith("com.microsoft.") for problem in fused)  # ONNX Runtime's fused operators
    if name != "resnet18":
        assert "com.microsoft.MultiHeadAttention × 2: not an operator TensorRT's ONNX parser supports" in fused


def test_parser_problems_name_unsupported_ops_opsets_and_non_constant_axes():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("ReduceSum", ["x", "shape"], ["r"], name="sum_over_computed_axes"),
        helper.make_node("ReduceSum", ["r", "axes"], ["r2"], name="sum_over_constant_axes"),
        helper.make_node("MatMulInteger", ["r2", "r2"], ["y"], name="int_matmul"),
    ]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    assert parser_problems(model) == [
        "opset 21: TensorRT 10 parses opsets 9-20",
        "MatMulInteger × 1: not an operator TensorRT's ONNX parser supports",
        "ReduceSum 'sum_over_computed_axes': its axes input must be a constant for TensorRT",
    ]
    assert {"DequantizeLinear", "QuantizeLinear", "LayerNormalization", "NonZero"} <= SUPPORTED_OPS
    assert not {"DynamicQuantizeLinear", "STFT", "MultiHeadAttention"} & SUPPORTED_OPS


def test_int8_for_tensorrt_is_symmetric_signed_qdq_the_parser_takes(tmp_path, tiny_checkpoint, synth_corpus):
    options = ExportOptions(
        "wav2vec2",
        checkpoint=str(tiny_checkpoint("wav2vec2")),
        optimize=False,
        int8=Int8Options("static", symmetric=True),
        calibration_data=str(synth_corpus),
        calibration_clips=10,
        eval_clips=10,
        gate=Gate(min_agreement=0.0, max_f1_drop=None),
    )
    bundle = export_bundle(options, tmp_path / "b")
    model = onnx.load(str(bundle.onnx_path))
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize
    for node in quantize:
        zero_point = constants[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    assert parser_problems(model) == []
    assert bundle.manifest.quantization["symmetric"] is True


def test_default_profiles_are_narrow_bands_that_cover_the_whole_range():
    profiles = plan_profiles()  # batch ≤ 32, 0.5-30 s, tuned at 4 s
    assert len(profiles) == 2 * 4
    assert profiles[0] == Profile((1, 1, 1), (8_000, 64_000, 64_000))
    assert {p.samples[2] / 16_000 for p in profiles} == {4.0, 8.0, 16.0, 30.0}
    for batch in (1, 2, 17, 32):
        for seconds in (0.5, 1.0, 4.0, 4.01, 12.0, 30.0):
            index = select_profile(profiles, batch, round(seconds * 16_000))
            assert profiles[index].covers(batch, round(seconds * 16_000))
    assert profiles[select_profile(profiles, 1, 64_000)].samples == (8_000, 64_000, 64_000)  # the narrower band
    assert profiles[select_profile(profiles, 8, 160_000)] == Profile((2, 32, 32), (128_000, 181_019, 256_000))
    assert profiles[0].shapes() == {"audio": ((1, 8_000), (1, 64_000), (1, 64_000)), "lengths": ((1,), (1,), (1,))}


def test_profiles_for_unusual_ranges_and_their_errors():
    fixed = plan_profiles(max_batch=1, min_seconds=2, opt_seconds=2, max_seconds=2)
    assert fixed == (Profile((1, 1, 1), (32_000, 32_000, 32_000)),)
    with pytest.raises(BackendError, match=r"batch 64 × 2\.00 s is outside every optimisation profile"):
        select_profile(plan_profiles(), 64, 32_000)
    with pytest.raises(BackendError, match="up to batch 32 and 30 s"):
        select_profile(plan_profiles(), 1, 31 * 16_000)
    with pytest.raises(ValueError, match="--min-seconds"):
        plan_profiles(min_seconds=5, opt_seconds=4)
    with pytest.raises(ValueError, match="--max-batch"):
        plan_profiles(max_batch=0)


def test_trt_options_refuse_fused_graphs_and_dynamic_or_asymmetric_int8():
    trt = TensorRTOptions()
    with pytest.raises(ValueError, match="--no-optimize"):
        ExportOptions("wavlm", trt=trt)
    with pytest.raises(ValueError, match="only as static, symmetric"):
        ExportOptions("wavlm", optimize=False, trt=trt, int8=Int8Options("dynamic"), eval_data="x")
    with pytest.raises(ValueError, match="only as static, symmetric"):
        ExportOptions("wavlm", optimize=False, trt=trt, int8=Int8Options("static"), calibration_data="x")
    ExportOptions("wavlm", optimize=False, trt=trt, int8=Int8Options("static", symmetric=True), calibration_data="x")


def test_manifest_keeps_engine_records(tiny_bundle):
    manifest = Bundle.load(tiny_bundle("wavlm")).manifest
    assert manifest.engines == ()
    target = GpuTarget("NVIDIA H100 80GB HBM3", "9.0", "10.1.0")
    record = {
        "file": "model.sm90.trt10.1.0.plan",
        "target": asdict(target),
        "profiles": [asdict(p) for p in plan_profiles()],
    }
    data = json.loads(manifest.to_json()) | {"engines": [record]}
    assert Manifest.from_dict(data, "m").engines == (record,)


@pytest.mark.skipif(_tensorrt_reason() is None, reason="TensorRT is installed: the refusal cannot be seen")
def test_export_with_trt_where_tensorrt_is_missing_says_so_before_any_work(tmp_path):
    options = ExportOptions("wavlm", size="tiny", random_init=True, optimize=False, trt=TensorRTOptions())
    with pytest.raises(TensorRTError, match=r"not installed|cuda-python|no CUDA GPU"):
        export_bundle(options, tmp_path / "b")
    assert not (tmp_path / "b").exists()


@pytest.mark.gpu
@needs_tensorrt
def test_engine_build_writes_a_plan_for_this_gpu(tmp_path, tiny_checkpoint):
    options = ExportOptions(
        "wav2vec2", checkpoint=str(tiny_checkpoint("wav2vec2")), optimize=False, fp16=True,
        trt=TensorRTOptions(max_batch=4, max_seconds=8, timing_cache=str(tmp_path / "timing.cache")),
    )  # fmt: skip
    bundle = export_bundle(options, tmp_path / "b")
    (record,) = bundle.manifest.engines
    assert (bundle.path / record["file"]).stat().st_size > 0 and record["file"] in bundle.manifest.files
    assert len(record["profiles"]) == 2 * 2 and (tmp_path / "timing.cache").stat().st_size > 0
    assert record["validation"]["passed"] and record["validation"]["tolerance"] == 5e-2  # FP16
