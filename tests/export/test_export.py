import json

import onnx
import pytest

from ser.bundle import Bundle
from ser.export import ExportOptions, ExportToleranceError, export_bundle
from ser.export.validate import CASES
from tests.conftest import TINY_MODELS


@pytest.mark.parametrize("name", TINY_MODELS)
def test_bundle_follows_the_contract(tiny_bundle, name):
    bundle = Bundle.load(tiny_bundle(name))
    m = bundle.manifest
    assert (m.model.name, m.model.size, m.precision, m.sample_rate) == (name, "tiny", "fp32", 16_000)
    assert m.labels == ("angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")
    assert m.source["kind"] == "checkpoint" and len(m.source["sha256"]) == 64
    assert {"torch", "transformers", "onnx"} <= set(m.versions)
    assert m.validation["passed"] and m.validation["max_abs_logit_error"] <= 1e-3
    assert m.validation["top1_agreement"] == 1.0
    assert [tuple(c) for c in m.validation["cases"]] == list(CASES)
    assert set(m.files) == {"model.onnx"}

    graph = onnx.load(bundle.onnx_path)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert dims == {"audio": ["batch", "samples"], "lengths": ["batch"]}
    types = {i.name: i.type.tensor_type.elem_type for i in graph.graph.input}
    assert types == {"audio": onnx.TensorProto.FLOAT, "lengths": onnx.TensorProto.INT64}
    (logits,) = graph.graph.output
    assert logits.name == "logits"
    assert [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim] == ["batch", 7]
    ops = {n.op_type for n in graph.graph.node}
    assert not ops & {"STFT", "DFT"}, "the log-mel must not use ops that CUDA/TensorRT lack"


def test_weight_norm_is_a_plain_initializer_in_the_graph(tiny_bundle):
    graph = onnx.load(tiny_bundle("wav2vec2") / "model.onnx")
    names = [i.name for i in graph.graph.initializer]
    assert not [n for n in names if "parametrizations" in n or "weight_g" in n or "weight_v" in n]
    assert any("pos_conv_embed.conv.weight" in n for n in names)
    ops = [n.op_type for n in graph.graph.node]
    assert "ReduceL2" not in ops  # no per-call weight-norm recomputation


@pytest.mark.parametrize("name", TINY_MODELS)
def test_graph_records_no_types_for_weights(tmp_path, name):
    """Initializers carry their own types; a value_info entry for one goes stale when ONNX Runtime's
    dynamic quantizer before 1.32 transposes a Gemm weight, and its shape inference then fails."""
    from ser.export.onnx import export_onnx
    from ser.models import load_model

    path = tmp_path / "raw.onnx"
    export_onnx(load_model(name, None, "tiny", random_init=True).waveform(), path)
    graph = onnx.load(str(path)).graph
    weights = {initializer.name for initializer in graph.initializer}
    assert weights and graph.value_info
    assert not [info.name for info in graph.value_info if info.name in weights]


def test_checkpoint_labels_reach_the_manifest(tmp_path):
    from ser.models import get_spec

    get_spec("resnet18").build("tiny", ("calm", "tense")).save_pretrained(tmp_path / "ckpt")
    bundle = export_bundle(ExportOptions("resnet18", checkpoint=str(tmp_path / "ckpt")), tmp_path / "out")
    assert bundle.manifest.labels == ("calm", "tense")
    assert bundle.manifest.outputs[0].shape == ("batch", 2)


def test_export_above_tolerance_fails_and_writes_nothing(tmp_path, tiny_checkpoint):
    options = ExportOptions("wav2vec2", checkpoint=str(tiny_checkpoint("wav2vec2")), tolerance=1e-12)
    with pytest.raises(ExportToleranceError, match=r"tolerance 1e-12.*no bundle written"):
        export_bundle(options, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_random_init_is_recorded(tmp_path):
    bundle = export_bundle(ExportOptions("resnet18", size="tiny", random_init=True), tmp_path / "b")
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    assert manifest["source"] == {
        "kind": "random-init",
        "seed": 0,
        "architecture": "ResNet18ForEmotion",
        "normalize": False,
    }


def test_precisions_exported_from_one_traced_graph_match_their_own_exports(tmp_path, tiny_checkpoint):
    from dataclasses import replace

    from ser.export import FloatGraphs

    graphs = FloatGraphs(tmp_path / "graphs")
    fp32 = ExportOptions("wavlm", checkpoint=str(tiny_checkpoint("wavlm")))
    fp16 = replace(fp32, fp16=True)
    export_bundle(fp32, tmp_path / "fp32", graph=graphs.get(fp32))
    shared = export_bundle(fp16, tmp_path / "fp16", graph=graphs.get(fp16))
    assert len(list((tmp_path / "graphs").iterdir())) == 1, "traced once for both precisions"
    alone = export_bundle(fp16, tmp_path / "fp16-alone")
    assert onnx.load(shared.onnx_path).graph == onnx.load(alone.onnx_path).graph
    assert shared.manifest.validation == alone.manifest.validation
    with pytest.raises(ValueError, match="float graph was made for"):
        export_bundle(replace(fp32, optimize=False), tmp_path / "plain", graph=graphs.get(fp32))
    assert not (tmp_path / "plain").exists()
