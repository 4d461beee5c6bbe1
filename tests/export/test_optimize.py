from collections import Counter

import numpy as np
import onnx
import pytest

from ser.bundle import Bundle
from ser.export import ExportOptions, export_bundle
from tests.conftest import TINY_MODELS

TRANSFORMERS = [name for name in TINY_MODELS if name != "resnet18"]


def op_counts(path) -> Counter:
    return Counter(node.op_type for node in onnx.load(path).graph.node)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_every_attention_layer_is_one_fused_node(tiny_bundle, name):
    bundle = Bundle.load(tiny_bundle(name))
    counts = op_counts(bundle.onnx_path)
    layers = 2  # the tiny size
    assert counts["MultiHeadAttention"] == layers
    assert counts["Softmax"] <= 1, "attention scores must not be computed outside the fused node"
    assert counts["Gelu"] + counts["BiasGelu"] >= 2 * layers, "GELU fusion regressed"
    fused = bundle.manifest.optimization["fused"]
    assert fused["MultiHeadAttention"] == bundle.manifest.optimization["attention_layers"] == layers
    assert bundle.manifest.optimization["nodes_after"] < bundle.manifest.optimization["nodes_before"]


def test_wavlm_keeps_its_gated_position_bias_inside_the_fused_attention(tiny_bundle):
    graph = onnx.load(Bundle.load(tiny_bundle("wavlm")).onnx_path).graph
    attention = [n for n in graph.node if n.op_type == "MultiHeadAttention"]
    assert all(len(n.input) == 6 and n.input[5] for n in attention), "attention_bias input must be wired"
    assert all(n.domain == "com.microsoft" for n in attention)


def test_no_optimize_writes_the_plain_graph(tmp_path, tiny_checkpoint):
    options = ExportOptions("wav2vec2", checkpoint=str(tiny_checkpoint("wav2vec2")), optimize=False)
    bundle = export_bundle(options, tmp_path / "plain")
    counts = op_counts(bundle.onnx_path)
    assert counts["MultiHeadAttention"] == 0 and counts["Softmax"] == 2
    assert bundle.manifest.optimization == {}


def test_fp16_keeps_reductions_in_fp32_and_stays_within_its_tolerance(tmp_path, tiny_checkpoint):
    options = ExportOptions("wav2vec2", checkpoint=str(tiny_checkpoint("wav2vec2")), fp16=True)
    bundle = export_bundle(options, tmp_path / "fp16")
    m = bundle.manifest
    assert m.precision == "fp16"
    assert m.validation["passed"] and m.validation["max_abs_logit_error"] <= 5e-2
    graph = onnx.load(bundle.onnx_path).graph
    float_types = Counter(
        i.data_type for i in graph.initializer if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    )
    assert float_types[onnx.TensorProto.FLOAT16] > float_types[onnx.TensorProto.FLOAT]
    io = [t.type.tensor_type.elem_type for t in (*graph.input, *graph.output) if t.name != "lengths"]
    assert io == [onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT], "inputs and outputs stay FP32"
    assert m.quantization["fp32_nodes"] > 0 and "ReduceSum" in m.quantization["fp32_op_types"]


def test_fp16_bundle_answers_like_fp32(tmp_path, tiny_checkpoint, tiny_bundle):
    from ser.runtime import EmotionRecognizer

    options = ExportOptions("resnet18", checkpoint=str(tiny_checkpoint("resnet18")), fp16=True)
    fp16 = EmotionRecognizer.load(export_bundle(options, tmp_path / "fp16").path)
    fp32 = EmotionRecognizer.load(tiny_bundle("resnet18"))
    clip = np.random.default_rng(0).standard_normal(24_000).astype(np.float32) * 0.1
    a, b = fp16.predict(clip, 16_000), fp32.predict(clip, 16_000)
    assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-2


def test_fp16_handles_clips_longer_than_fp16_can_count(tmp_path, tiny_checkpoint):
    # 30 s is 480,000 samples, past FP16's 65,504: the length arithmetic must stay FP32.
    from ser.data.signals import synthetic_voice
    from ser.runtime import EmotionRecognizer

    options = ExportOptions("wav2vec2", checkpoint=str(tiny_checkpoint("wav2vec2")), fp16=True)
    bundle = export_bundle(options, tmp_path / "fp16")
    assert bundle.manifest.quantization["fp32_length_nodes"] > 0
    clip = synthetic_voice(30 * 16_000, seed=1)
    fp16 = EmotionRecognizer.load(bundle.path).predict(clip, 16_000)
    fp32 = EmotionRecognizer.load(export_bundle(ExportOptions(options.model, options.checkpoint), tmp_path / "a").path)
    expected = fp32.predict(clip, 16_000)
    assert all(np.isfinite(v) for v in fp16.scores.values())
    assert max(abs(fp16.scores[k] - expected.scores[k]) for k in expected.scores) < 1e-2


def test_a_cast_written_once_per_consumer_is_kept_once(tiny_bundle):
    """ONNX Runtime's FP16 converter before 1.32 (what onnxruntime-gpu ships) repeats such Casts under one
    name, and no session loads that graph."""
    import onnxruntime as ort

    from ser.export.optimize import _drop_repeats

    model = onnx.load(Bundle.load(tiny_bundle("wavlm")).onnx_path)
    cast = onnx.helper.make_node("Cast", ["audio"], ["audio_fp64"], to=onnx.TensorProto.DOUBLE, name="audio_cast")
    model.graph.node.extend([cast, cast])
    model.graph.output.append(onnx.helper.make_tensor_value_info("audio_fp64", onnx.TensorProto.DOUBLE, None))
    with pytest.raises(Exception, match="same node name"):
        ort.InferenceSession(model.SerializeToString())
    _drop_repeats(model)
    assert [n.name for n in model.graph.node].count("audio_cast") == 1
    audio = np.full((1, 16_000), 0.25, np.float32)
    feeds = {"audio": audio, "lengths": np.array([16_000], np.int64)}
    logits, audio_fp64 = ort.InferenceSession(model.SerializeToString()).run(["logits", "audio_fp64"], feeds)
    assert logits.shape == (1, 7) and audio_fp64.dtype == np.float64 and np.all(audio_fp64 == 0.25)


def test_fp16_exports_the_layer_normed_encoder_of_the_large_models(tmp_path):
    """HuBERT-large's layout (LayerNorm in every feature-encoder layer, norms before attention), tiny:
    the LayerNorms stay FP32 and the fused GELUs in front of them must be cast back to it."""
    import torch
    from transformers import HubertForSequenceClassification, Wav2Vec2FeatureExtractor

    from ser.models import get_spec

    spec = get_spec("hubert")
    config = spec.config("tiny")
    config.update({"feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True})
    torch.manual_seed(0)
    HubertForSequenceClassification(config).save_pretrained(tmp_path / "checkpoint")
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(tmp_path / "checkpoint")
    bundle = export_bundle(ExportOptions("hubert", checkpoint=str(tmp_path / "checkpoint"), fp16=True), tmp_path / "b")
    assert bundle.manifest.precision == "fp16" and bundle.manifest.validation["passed"]
    graph = onnx.load(bundle.onnx_path).graph
    assert op_counts(bundle.onnx_path)["LayerNormalization"] >= 7 + 2  # the encoder's 7 conv layers, then more
    assert any(n.op_type == "Gelu" for n in graph.node), "the fused GELU this guards is there"
