"""INT8 export: graph structure per mode, the accuracy gate (pass with FP32 fallback, forced failure)
and per-node sensitivity, all through real ONNX Runtime quantization and sessions."""

import dataclasses
import logging
import re
import shutil
from collections import Counter

import numpy as np
import onnx
import pytest
import safetensors.torch
import torch

from ser.bundle import Bundle
from ser.export import ExportGateError, ExportOptions, Gate, Int8Options, export_bundle
from ser.export.calibration import AudioFolderReader
from ser.export.quantize import Quantizer, node_sensitivity, quantizable_nodes
from ser.runtime.openvino import unavailable_reason as openvino_unavailable


def int8_options(
    checkpoint, corpus, mode: str, gate: Gate, model: str = "wav2vec2", eval_clips: int = 24
) -> ExportOptions:
    return ExportOptions(
        model,
        checkpoint=str(checkpoint(model)),
        int8=Int8Options(mode),
        calibration_data=str(corpus),
        calibration_clips=20,
        eval_clips=eval_clips,
        gate=gate,
    )


OPEN_GATE = Gate(min_agreement=0.0, max_f1_drop=None)
POINT = {"confidence": None}  # judge the point agreement: these tests have a few dozen clips


def test_static_int8_quantizes_matmul_and_conv_per_channel(tmp_path, tiny_checkpoint, synth_corpus):
    bundle = export_bundle(int8_options(tiny_checkpoint, synth_corpus, "static", OPEN_GATE), tmp_path / "b")
    graph = onnx.load(bundle.onnx_path).graph
    counts = Counter(n.op_type for n in graph.node)
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > counts["QuantizeLinear"]
    assert counts["MultiHeadAttention"] == 2, "quantization keeps the fused attention"
    initializers = {i.name: i for i in graph.initializer}
    int8_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 6 + 2 * 6, "the feature encoder's convs after the first and every MatMul are INT8"
    producers = {o: n for n in graph.node for o in n.output}
    first_conv = next(n for n in graph.node if n.op_type == "Conv")
    assert first_conv.input[1] in initializers and initializers[first_conv.input[1]].data_type == onnx.TensorProto.FLOAT
    assert producers[first_conv.input[0]].op_type != "DequantizeLinear", "the waveform conv reads float samples"
    producers = {o: n for n in graph.node for o in n.output}
    conv_weights = [producers.get(n.input[1]) for n in graph.node if n.op_type == "Conv"]
    per_channel = [
        d for d in conv_weights if d is not None and d.op_type == "DequantizeLinear" and d.input[0] in initializers
    ]
    assert per_channel, "Conv weights must be quantized"
    scales = [np.prod(initializers[d.input[1]].dims) for d in per_channel]
    assert max(scales) > 1, "weights must carry one scale per output channel"

    # a MatMul answers in float: no pair after it; a float reader (the residual Add, the SkipLayerNorm) of a
    # tensor quantized for a MatMul reads the tensor itself, not its 8-bit copy; a conv's own output stays 8-bit
    def dequantized(tensor):  # the DequantizeLinear that gives `tensor`, if any
        node = producers.get(tensor)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    quantized = {n.name for n in graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and dequantized(n.input[1])}
    quantizes = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert not [q for q in quantizes if getattr(producers.get(q.input[0]), "op_type", None) in ("MatMul", "Gemm")]
    for node in graph.node:
        if node.name in quantized or node.op_type in ("QuantizeLinear", "MultiHeadAttention"):
            continue
        for tensor in node.input:
            dequantize = dequantized(tensor)
            if dequantize is not None and dequantize.input[0] not in initializers:
                source = producers.get(producers[dequantize.input[0]].input[0])
                assert source is not None and source.name in quantized and source.op_type == "Conv", node.name
    # attention: query and key on a symmetric signed grid (their product a plain INT8 one), the value float
    for attention in (n for n in graph.node if n.op_type == "MultiHeadAttention"):
        query, key, value = (dequantized(tensor) for tensor in attention.input[:3])
        assert value is None and query is not None and key is not None, attention.name
        for pair in (query, key):
            zero_point = onnx.numpy_helper.to_array(initializers[pair.input[2]])
            assert zero_point.dtype == np.int8 and zero_point == 0
    q = bundle.manifest.quantization
    assert bundle.manifest.precision == "int8-static"
    assert q["method"] == "minmax" and q["calibration"]["clips"] == 20 and q["fp32_nodes"] == []
    assert q["size_bytes"] < q["fp32_size_bytes"]
    # judged on clips the quantizer never saw: 42 in the corpus, 20 calibrated on, 22 left of the 24 asked for
    assert 0 <= q["agreement"] <= 1 and q["clips"] == 22
    assert q["evaluation"]["disjoint_from_calibration"] and q["evaluation"]["excluded_calibration_clips"] == 20
    answers = q["evaluation"]["reference_answers"]
    assert set(answers) == set(bundle.manifest.labels) and sum(answers.values()) == 22
    v = bundle.manifest.validation  # recorded against PyTorch; the gate, not a tolerance, decides
    assert v["tolerance"] is None and v["passed"] and v["max_abs_logit_error"] > 0


def test_dynamic_int8_quantizes_matmuls_only(tmp_path, tiny_checkpoint, synth_corpus):
    bundle = export_bundle(int8_options(tiny_checkpoint, synth_corpus, "dynamic", OPEN_GATE), tmp_path / "b")
    counts = Counter(n.op_type for n in onnx.load(bundle.onnx_path).graph.node)
    assert counts["MatMulInteger"] + counts["DynamicQuantizeMatMul"] > 0
    # every conv stays float: the feature encoder's, the positional one, the masked GroupNorm's window copy
    assert counts["ConvInteger"] == 0 and counts["Conv"] == 9
    assert bundle.manifest.precision == "int8-dynamic" and bundle.manifest.quantization["calibration"] is None


def test_gate_keeps_sensitive_nodes_in_fp32_until_it_passes(tmp_path, tiny_checkpoint, synth_corpus):
    # A random tiny model's logits nearly tie, so full INT8 flips answers; with enough nodes back in
    # FP32 the graph agrees with PyTorch on every clip.
    gate = Gate(min_agreement=1.0, max_f1_drop=0.0, max_fp32_fraction=1.0, **POINT)
    bundle = export_bundle(int8_options(tiny_checkpoint, synth_corpus, "static", gate), tmp_path / "b")
    q = Bundle.load(bundle.path).manifest.quantization
    assert q["agreement"] == 1.0 and q["passed"] and q["scored"] == q["clips"] == 22
    assert q["fp32_nodes"], "full INT8 should have missed a 100% agreement gate on this model"
    search = q["search"]
    assert search[0]["fp32_nodes"] == 0 and search[0]["scored"] < 22, "a hopeless candidate stops at its first miss"
    assert search[1]["fp32_nodes"] == 24 and search[1]["passed"], "the budget is tried before the climb"
    assert search[-1]["passed"] or any(step["passed"] for step in search)
    passing = [step["fp32_nodes"] for step in search if step["passed"]]
    assert min(passing) == len(q["fp32_nodes"]), "the bundle keeps the fewest FP32 nodes that passed"
    failing = [step["fp32_nodes"] for step in search if not step["passed"]]
    assert max(failing) == len(q["fp32_nodes"]) - 1, "bisected down to one node"
    # OpenVINO, where installed, judges the graph the search settled on: a verdict of its own, timed apart
    engines = {"onnxruntime-cpu"} | ({"openvino-cpu"} if openvino_unavailable() is None else set())
    assert set(q["gate_verdicts"]) == engines and q["gate_verdicts"]["onnxruntime-cpu"]["passed"]
    assert set(q["gate_backends"]) == {e for e in engines if q["gate_verdicts"][e]["passed"]}
    assert set(q["seconds"]) == {"reference", "rank", "search"} | ({"openvino"} if len(engines) == 2 else set())
    assert q["seconds"]["rank"] > 0
    graph = onnx.load(bundle.onnx_path).graph
    kept = {n.name: n for n in graph.node if n.name in q["fp32_nodes"]}
    assert set(kept) == set(q["fp32_nodes"])
    producers = {o: n.op_type for n in graph.node for o in n.output}
    initializers = {i.name for i in graph.initializer}
    for node in kept.values():
        weight = node.input[1]
        assert weight in initializers or producers.get(weight) != "DequantizeLinear", f"{node.name} is not FP32"
    # 23 with a constant weight, less the waveform conv, and the two attention nodes
    assert q["quantized_nodes"] + len(q["fp32_nodes"]) == 24


def test_a_reference_that_answers_one_label_everywhere_is_called_out(tmp_path, tiny_checkpoint, synth_corpus, caplog):
    # The bias outweighs what the clips change: PyTorch says "fearful" for every clip, and any graph agrees
    # (dynamic INT8: no calibration clips, so all 24 evaluate).
    checkpoint = tmp_path / "one-label"
    shutil.copytree(tiny_checkpoint("wav2vec2"), checkpoint)
    weights = safetensors.torch.load_file(checkpoint / "model.safetensors")
    weights["classifier.bias"] = torch.tensor([0.0, 0.0, 50.0, 0.0, 0.0, 0.0, 0.0])
    safetensors.torch.save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    options = dataclasses.replace(int8_options(tiny_checkpoint, synth_corpus, "dynamic", OPEN_GATE),
                                  checkpoint=str(checkpoint))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="ser.export.exporter"):
        bundle = export_bundle(options, tmp_path / "b")
    assert bundle.manifest.quantization["evaluation"]["reference_answers"]["fearful"] == 24
    assert "answers 'fearful' for 24 of 24 evaluation clips" in caplog.text


def test_a_refusal_costs_two_candidates_the_full_graph_and_the_budget(tmp_path, tiny_checkpoint, synth_corpus):
    gate = Gate(min_agreement=1.0, max_f1_drop=0.0, max_fp32_fraction=0.2, **POINT)  # 4 of 24 nodes: too few
    with pytest.raises(ExportGateError, match=r"even with 4 of 24 nodes") as refused:
        export_bundle(int8_options(tiny_checkpoint, synth_corpus, "static", gate), tmp_path / "b")
    tried = re.findall(r"(\d+) FP32 →", str(refused.value))
    assert tried == ["0", "4"], "no climb below a budget that already failed"


def test_export_that_cannot_pass_the_gate_writes_nothing(tmp_path, tiny_checkpoint, synth_corpus):
    gate = Gate(min_agreement=1.0, max_f1_drop=0.0, max_fp32_fraction=0.0, **POINT)  # no fallback allowed
    with pytest.raises(ExportGateError, match=r"misses the accuracy gate.*0 of 24 nodes.*no bundle written"):
        export_bundle(int8_options(tiny_checkpoint, synth_corpus, "static", gate), tmp_path / "b")
    assert not (tmp_path / "b").exists()
    assert [p for p in tmp_path.iterdir()] == []


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_takes_clips_of_different_lengths(tmp_path, tiny_checkpoint, synth_corpus, method):
    # ONNX Runtime's histogram collectors stack a tensor's values over all clips: the reader cuts them to one length.
    options = int8_options(tiny_checkpoint, synth_corpus, "static", OPEN_GATE)
    options = dataclasses.replace(options, int8=Int8Options("static", method=method))
    lengths = {len(clip) for clip in AudioFolderReader.from_folder(synth_corpus, limit=20).clips}
    assert len(lengths) > 1, "the corpus must have clips of several lengths for this test to mean anything"
    bundle = export_bundle(options, tmp_path / "b")
    assert bundle.manifest.quantization["method"] == method


def test_int8_needs_audio_for_its_gate():
    with pytest.raises(ValueError, match="--eval-data"):
        ExportOptions("wav2vec2", int8=Int8Options("dynamic"))
    with pytest.raises(ValueError, match="one of --fp16 and --int8"):
        ExportOptions("wav2vec2", fp16=True, int8=Int8Options("dynamic"), eval_data="x")
    with pytest.raises(ValueError, match="entropy"):
        Int8Options("static", method="kl")
    with pytest.raises(ValueError, match="--int8-target 'avx2': choose one of portable, vnni"):
        Int8Options("static", target="avx2")
    assert Int8Options("dynamic").reduce_range and not Int8Options("dynamic", target="vnni").reduce_range
    assert not Int8Options("static", symmetric=True).reduce_range  # TensorRT takes full-range INT8


def test_sensitivity_measures_each_node_alone_at_the_output(tmp_path, tiny_checkpoint, synth_corpus):
    from ser.export.onnx import export_onnx
    from ser.export.optimize import optimize_graph
    from ser.models import load_model

    module = load_model("wav2vec2", str(tiny_checkpoint("wav2vec2"))).waveform()
    export_onnx(module, tmp_path / "raw.onnx", fuse_attention=True)
    optimize_graph(tmp_path / "raw.onnx", tmp_path / "float.onnx")
    nodes = quantizable_nodes(onnx.load(tmp_path / "float.onnx"), "static")
    reader = AudioFolderReader.from_folder(synth_corpus, limit=6)
    quantizer = Quantizer(tmp_path / "float.onnx", Int8Options("static"), reader, tmp_path)
    quantizer.quantize(tmp_path / "q.onnx", exclude=[nodes[0]])
    assert (tmp_path / "calibration.json").is_file(), "ranges are cached for the fallback rounds"
    from ser.runtime.recognizer import pad_batch

    audio, lengths = pad_batch(reader.clips[:2])
    feeds = {"audio": audio, "lengths": lengths}
    scores = node_sensitivity(tmp_path / "float.onnx", tmp_path / "q.onnx", nodes, feeds, quantizer.quantize)
    assert set(scores) == set(nodes), scores
    floor = min(scores.values())
    assert scores[nodes[0]] == floor, "a node left in FP32, alone, is as good as none quantized"
    assert max(scores.values()) > 100 * floor, "the damaging nodes must stand out"

    # Dynamic graphs lose the node names, so each node is re-quantized alone: same contract.
    dynamic = Quantizer(tmp_path / "float.onnx", Int8Options("dynamic"), None, tmp_path)
    dynamic.quantize(tmp_path / "d.onnx")
    matmuls = quantizable_nodes(onnx.load(tmp_path / "float.onnx"), "dynamic")[:3]
    scores = node_sensitivity(tmp_path / "float.onnx", tmp_path / "d.onnx", matmuls, feeds, dynamic.quantize)
    assert set(scores) == set(matmuls) and min(scores.values()) > 0


def test_attention_rounds_query_and_key_to_a_grid_that_holds_the_calibrated_range(
    tmp_path, tiny_checkpoint, synth_corpus
):
    import onnxruntime as ort

    from ser.export.onnx import export_onnx
    from ser.export.optimize import optimize_graph
    from ser.models import load_model

    module = load_model("wav2vec2", str(tiny_checkpoint("wav2vec2"))).waveform()
    export_onnx(module, tmp_path / "raw.onnx", fuse_attention=True)
    optimize_graph(tmp_path / "raw.onnx", tmp_path / "float.onnx")
    float_graph = onnx.load(tmp_path / "float.onnx")
    attention = [n for n in float_graph.graph.node if n.op_type == "MultiHeadAttention"]
    others = [name for name in quantizable_nodes(float_graph, "static") if name not in {n.name for n in attention}]
    reader = AudioFolderReader.from_folder(synth_corpus, limit=6)
    quantizer = Quantizer(tmp_path / "float.onnx", Int8Options("static"), reader, tmp_path)
    quantizer.quantize(tmp_path / "q.onnx", exclude=others)  # the attention nodes alone
    graph = onnx.load(tmp_path / "q.onnx")
    assert Counter(n.op_type for n in graph.graph.node)["QuantizeLinear"] == 2 * len(attention) == 4
    # every query and key of the calibration clips, beside what the attention node reads instead
    float_nodes = {n.name: n for n in attention}
    pairs = {n.input[i]: float_nodes[n.name].input[i]
             for n in graph.graph.node if n.op_type == "MultiHeadAttention" for i in (0, 1)}  # fmt: skip
    graph.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in [*pairs, *pairs.values()])
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in graph.graph.initializer}
    producers = {o: n for n in graph.graph.node for o in n.output}
    for feeds in reader:
        values = dict(zip([*pairs, *pairs.values()], session.run([*pairs, *pairs.values()], feeds), strict=True))
        for rounded, original in pairs.items():
            scale = initializers[producers[rounded].input[1]]
            error = np.abs(values[rounded] - values[original])
            assert error.max() <= scale / 2 * 1.001, "no calibration clip's query or key is clipped"
            assert error.max() > 0 and np.unique(np.round(values[rounded] / scale)).size <= 255


@pytest.mark.parametrize(("agreed", "clips"), [(70, 70), (299, 299), (59, 60), (5, 10), (1, 200)])
def test_the_agreement_lower_bound_is_clopper_pearsons(agreed, clips):
    from scipy.stats import beta

    from ser.export.gate import agreement_lower_bound

    assert agreement_lower_bound(agreed, clips) == pytest.approx(beta.ppf(0.05, agreed, clips - agreed + 1), abs=1e-9)
    assert agreement_lower_bound(0, clips) == 0.0


def test_the_gate_judges_what_the_clips_show():
    gate = Gate()  # 99 % shown at 95 % confidence
    assert gate.min_clips == 299 and gate.allowed_disagreements(298) == -1 and gate.allowed_disagreements(300) == 0
    for clips in (300, 500, 1000):
        allowed = gate.allowed_disagreements(clips)
        assert gate.shown(clips - allowed, clips) >= 0.99 > gate.shown(clips - allowed - 1, clips)
    assert gate.allowed_disagreements(1000) >= 4
    point = Gate(min_agreement=0.95, **POINT)
    assert point.min_clips == 1 and point.allowed_disagreements(100) == 5 and point.shown(19, 20) == 0.95
    with pytest.raises(ValueError, match=r"70 evaluation clips can show at most 95.8% .* at least 299 clips"):
        gate.check_clips(70, "demo")
    with pytest.raises(ValueError, match="can never be shown with confidence"):
        Gate(min_agreement=1.0)
    with pytest.raises(ValueError, match=r"--eval-clips 50: 50 evaluation clips can show at most 94\.2%"):
        ExportOptions("wav2vec2", int8=Int8Options("dynamic"), eval_data="x", eval_clips=50)


def test_a_folder_too_small_for_the_gate_is_refused_before_any_quantization(tmp_path, tiny_checkpoint, synth_corpus):
    # 42 clips, 20 of them calibration: 22 left, where 99 % at 95 % needs 299.
    options = int8_options(tiny_checkpoint, synth_corpus, "static", Gate(min_agreement=0.9), eval_clips=40)
    refused = r"gives 22 usable clips \(20 more are calibration clips\).* at least 29 clips"
    with pytest.raises(ValueError, match=refused):
        export_bundle(options, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_the_gate_judges_a_dimensional_model_by_ccc_with_a_bound_and_max_error(
    tmp_path, dimensional_checkpoint, synth_corpus
):
    """Static INT8 of audeering's layout: the manifest records CCC per dimension with its lower bound, and a
    gate the graph cannot meet is refused naming CCC, not top-1 agreement."""
    options = ExportOptions(
        checkpoint=str(dimensional_checkpoint),
        int8=Int8Options("static"),
        calibration_data=str(synth_corpus),
        calibration_clips=10,
        eval_clips=32,  # 42 clips, 10 calibrated on
        gate=Gate(min_ccc=0.9, max_abs_error=0.5, max_fp32_fraction=1.0),
    )
    bundle = export_bundle(options, tmp_path / "b")
    q = bundle.manifest.quantization
    assert bundle.manifest.answer["kind"] == "dimensions" and q["passed"]
    assert q["clips"] == q["scored"] == 32 and len(q["ccc"]) == 3 and len(q["ccc_lower_bound"]) == 3
    assert all(lower <= point + 1e-9 for lower, point in zip(q["ccc_lower_bound"], q["ccc"], strict=True))
    assert min(q["ccc_lower_bound"]) >= 0.9 and q["max_abs_error"] <= 0.5
    assert q["gate"]["min_ccc"] == 0.9 and q["evaluation"]["reference_answers"] == {}
    assert all("min_ccc_lower_bound" in candidate for candidate in q["search"])
    assert "top1_agreement" not in bundle.manifest.validation and len(bundle.manifest.validation["ccc"]) == 3

    strict = dataclasses.replace(options, gate=Gate(min_ccc=0.999999, max_abs_error=1e-6, max_fp32_fraction=0.0))
    with pytest.raises(ExportGateError, match=r"CCC shown ≥ 0.999999 per dimension at 95% confidence, max \|error\|"):
        export_bundle(strict, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()

    with pytest.raises(ValueError, match="too few to bound a dimension's CCC"):
        export_bundle(dataclasses.replace(options, eval_clips=12), tmp_path / "few")
