"""OpenVINO as a runtime backend: the bundle's own graph, its contract kept, INT8 verified where its gate judged
it, and `auto` following what `ser tune` measured on this kind of CPU."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ser.bench.tune import tune
from ser.bundle import Bundle, BundleError
from ser.export import ExportOptions, Gate, Int8Options, export_bundle
from ser.runtime.openvino import unavailable_reason
from ser.runtime.recognizer import EmotionRecognizer, open_backend
from ser.runtime.tuning import record_path
from tests.conftest import speech_like

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


@pytest.mark.parametrize("name", ["wav2vec2", "whisper", "resnet18"])
def test_a_ragged_batch_answers_as_each_clip_alone(tiny_bundle, name):
    clips = [speech_like(s, seed=i) for i, s in enumerate((1.0, 0.3, 2.2))]
    with EmotionRecognizer.load(tiny_bundle(name), backend="openvino-cpu", threads=2) as recognizer:
        together = recognizer.classify(clips)
        for clip, answer in zip(clips, together, strict=True):
            alone = recognizer.classify([clip])[0]
            assert alone.label == answer.label
            np.testing.assert_allclose(list(alone.scores.values()), list(answer.scores.values()), atol=1e-5)


def _ragged_feeds(seconds: tuple[float, ...]) -> dict[str, np.ndarray]:
    clips = [speech_like(s, seed=i) for i, s in enumerate(seconds)]
    audio = np.zeros((len(clips), max(len(c) for c in clips)), dtype=np.float32)
    for row, clip in enumerate(clips):
        audio[row, : len(clip)] = clip
    return {"audio": audio, "lengths": np.array([len(c) for c in clips], dtype=np.int64)}


@pytest.mark.parametrize("name", ["wavlm", "resnet18"])
def test_a_repeated_shape_gets_a_compile_of_its_own_that_answers_as_onnxruntime_does(tiny_bundle, name):
    from ser.runtime.onnxrt import OnnxRuntimeBackend
    from ser.runtime.openvino import STATIC_AFTER, OpenVinoBackend

    bundle = Bundle.load(tiny_bundle(name))
    ragged, other = _ragged_feeds((1.0, 0.4, 1.6)), _ragged_feeds((0.5,))
    with OnnxRuntimeBackend(bundle.onnx_path, bundle.manifest.inputs, threads=2) as backend:
        expected = backend.infer(ragged)["logits"]
    with OpenVinoBackend(bundle.onnx_path, bundle.manifest.inputs, threads=2, static_shapes=1) as backend:
        answers = [backend.infer(ragged)["logits"] for _ in range(STATIC_AFTER + 1)]
        assert backend.static_shapes_compiled == [((3, 25_600), (3,))]
        for _ in range(STATIC_AFTER + 1):  # the one shape it may compile for is taken: this one stays dynamic
            backend.infer(other)
        assert backend.static_shapes_compiled == [((3, 25_600), (3,))]
    for logits in answers:  # the padded rows masked as before: the bundle's ragged-batch contract holds there too
        np.testing.assert_allclose(logits, expected, atol=1e-4)
    with OpenVinoBackend(bundle.onnx_path, bundle.manifest.inputs, threads=2, static_shapes=0) as backend:
        for _ in range(STATIC_AFTER + 1):
            backend.infer(ragged)
        assert backend.static_shapes_compiled == []


def test_the_environment_and_a_memory_budget_bound_the_shapes_compiled_for(tiny_bundle, monkeypatch):
    from ser.runtime.base import BackendError
    from ser.runtime.openvino import STATIC_AFTER, OpenVinoBackend

    bundle = Bundle.load(tiny_bundle("resnet18"))
    monkeypatch.setenv("SER_OPENVINO_STATIC_SHAPES", "0")
    with EmotionRecognizer.load(bundle.path, backend="openvino-cpu", threads=2) as recognizer:
        for _ in range(STATIC_AFTER + 1):
            recognizer.classify([speech_like(1.0)])
        assert recognizer.backend.static_shapes_compiled == []
    monkeypatch.setenv("SER_OPENVINO_STATIC_SHAPES", "4")
    monkeypatch.setattr("ser.runtime.openvino.STATIC_MEMORY", bundle.onnx_path.stat().st_size)  # under one compile
    with OpenVinoBackend(bundle.onnx_path, bundle.manifest.inputs, threads=2) as backend:
        for _ in range(STATIC_AFTER + 1):
            backend.infer(_ragged_feeds((1.0,)))
        assert backend.static_shapes_compiled == []
    for setting in ("-1", "four", ""):
        monkeypatch.setenv("SER_OPENVINO_STATIC_SHAPES", setting)
        with pytest.raises(BackendError, match=f"SER_OPENVINO_STATIC_SHAPES={setting!r}: give a whole number"):
            OpenVinoBackend(bundle.onnx_path, bundle.manifest.inputs)


def test_a_shape_openvino_will_not_compile_for_leaves_every_shape_dynamic(tiny_bundle, monkeypatch, caplog):
    import ser.runtime.openvino as openvino

    bundle = Bundle.load(tiny_bundle("resnet18"))
    compile_any_shape = openvino.compile_for_cpu

    def refuse_fixed_shapes(model, threads, perf_count=False):  # as OpenVINO refuses a graph it cannot reshape
        if not isinstance(model, Path) and model.get_parameters()[0].get_partial_shape().is_static:
            raise RuntimeError("Check 'shape_infer' failed\nmore detail")
        return compile_any_shape(model, threads, perf_count)

    monkeypatch.setattr(openvino, "compile_for_cpu", refuse_fixed_shapes)
    caplog.set_level(logging.WARNING, logger="ser")
    feeds = _ragged_feeds((1.0,))
    with openvino.OpenVinoBackend(bundle.onnx_path, bundle.manifest.inputs, threads=2) as backend:
        answers = [backend.infer(feeds)["logits"] for _ in range(openvino.STATIC_AFTER + 2)]
        assert backend.static_shapes_compiled == []
    assert caplog.text.count("cannot compile it for shape ((1, 16000), (1,)) (Check 'shape_infer' failed)") == 1
    for logits in answers[1:]:
        np.testing.assert_array_equal(logits, answers[0])


@pytest.fixture(scope="module")
def int8_bundle(tiny_checkpoint, synth_corpus, tmp_path_factory) -> Bundle:
    options = ExportOptions(
        checkpoint=str(tiny_checkpoint("wav2vec2")),
        int8=Int8Options("static"),
        calibration_data=str(synth_corpus),
        calibration_clips=12,
        eval_clips=12,
        gate=Gate(min_agreement=0.0, max_f1_drop=None),
    )
    return export_bundle(options, tmp_path_factory.mktemp("int8") / "bundle")


def test_the_gate_judges_the_int8_graph_on_openvino_too_and_records_it(int8_bundle):
    quantization = int8_bundle.manifest.quantization
    assert set(quantization["gate_verdicts"]) == {"onnxruntime-cpu", "openvino-cpu"}
    assert quantization["gate_verdicts"]["openvino-cpu"]["scored"] == 12
    assert quantization["gate_backends"] == ["onnxruntime-cpu", "openvino-cpu"]  # an open gate passes both
    with EmotionRecognizer.load(int8_bundle.path, backend="openvino-cpu", strict_cpu=True) as recognizer:
        assert recognizer.cpu_warning is None


def test_openvino_reads_the_int8_graph_as_its_own_int8_models_are_written(int8_bundle, tiny_bundle):
    import onnx
    import openvino as ov

    from ser.runtime.onnxrt import OnnxRuntimeBackend
    from ser.runtime.openvino import OpenVinoBackend, lower_qdq

    graph = onnx.load(int8_bundle.onnx_path).graph
    produced_by = {o: n.op_type for n in graph.node for o in n.output}
    int8_convs = [n for n in graph.node if n.op_type == "Conv" and produced_by.get(n.input[1]) == "DequantizeLinear"]
    model = ov.Core().read_model(str(int8_bundle.onnx_path))
    floated, folded = lower_qdq(model)
    assert floated == len(int8_convs) == 7, "every INT8 conv (6 in the feature encoder, 1 positional) answers in float"
    assert folded > 0 and lower_qdq(model) == (0, 0)
    for op in model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            assert op.input_value(0).get_node().get_type_name() not in ("Convolution", "GroupConvolution")
            readers = {reader.get_node().get_type_name() for reader in op.output(0).get_target_inputs()}
            assert "Convert" not in readers, "float to float: one node, no dequantize chain after it"
    # One rounding per conv fewer than on ONNX Runtime: not the same answers (the gate judges this backend on its
    # own), but no further from the FP32 graph than INT8 on ONNX Runtime is, give or take a random model's noise.
    clips = np.stack([speech_like(2.0, seed=i) for i in range(8)])
    feeds = {"audio": clips, "lengths": np.full(8, clips.shape[1], dtype=np.int64)}
    fp32 = Bundle.load(tiny_bundle("wav2vec2"))
    with OnnxRuntimeBackend(fp32.onnx_path, fp32.manifest.inputs, threads=2) as backend:
        reference = backend.infer(feeds)["logits"]
    with OnnxRuntimeBackend(int8_bundle.onnx_path, int8_bundle.manifest.inputs, threads=2) as backend:
        onnxruntime = backend.infer(feeds)["logits"]
    with OpenVinoBackend(int8_bundle.onnx_path, int8_bundle.manifest.inputs, threads=2) as backend:
        openvino = backend.infer(feeds)["logits"]
    assert not np.allclose(openvino, onnxruntime, atol=1e-4)
    assert np.abs(openvino - reference).mean() < 2 * np.abs(onnxruntime - reference).mean()


def _gated_on_onnxruntime_only(bundle: Bundle, out: Path) -> Path:
    """The bundle with the manifest a gate leaves when it judged ONNX Runtime alone (as before OpenVINO)."""
    shutil.copytree(bundle.path, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["quantization"]["gate_backends"] = ["onnxruntime-cpu"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_an_int8_bundle_gated_on_onnxruntime_warns_or_refuses_on_openvino(int8_bundle, tmp_path, caplog):
    path = _gated_on_onnxruntime_only(int8_bundle, tmp_path / "bundle")
    caplog.set_level(logging.WARNING, logger="ser")
    with EmotionRecognizer.load(path, backend="openvino-cpu") as recognizer:
        assert "judged onnxruntime-cpu, not openvino-cpu" in recognizer.cpu_warning
        assert recognizer.predict(speech_like(1.0)[None].T, 16_000).label  # a warning, still an answer
    assert caplog.text.count("judged onnxruntime-cpu, not openvino-cpu") == 1
    with pytest.raises(BundleError, match="judged onnxruntime-cpu, not openvino-cpu"):
        EmotionRecognizer.load(path, backend="openvino-cpu", strict_cpu=True)
    with EmotionRecognizer.load(path, backend="onnxruntime-cpu", strict_cpu=True) as recognizer:
        assert recognizer.cpu_warning is None
    # A bundle from before the gate recorded its backends was judged on ONNX Runtime alone.
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["quantization"]["gate_backends"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="judged onnxruntime-cpu, not openvino-cpu"):
        EmotionRecognizer.load(path, backend="openvino-cpu", strict_cpu=True)


def test_tune_records_the_fastest_verified_backend_and_auto_follows_it(tiny_bundle, tmp_path):
    path = tmp_path / "bundle"
    shutil.copytree(tiny_bundle("wavlm"), path)
    bundle = Bundle.load(path)
    assert open_backend(bundle).name == "onnxruntime-cpu"  # never tuned here: ONNX Runtime
    result = tune(bundle, batches=(1, 2), seconds=1.0, runs=3)
    assert [m.backend for m in result.measurements] == ["onnxruntime-cpu", "openvino-cpu"]
    assert all(m.verified and set(m.median_ms) == {"1x1s", "2x1s"} for m in result.measurements)
    fastest = min(result.measurements, key=lambda m: m.total_ms).backend
    assert (
        result.choice == fastest and open_backend(Bundle.load(path)).name == fastest
    )  # the record is outside the hashes
    record = json.loads(record_path(bundle).read_text())
    assert record["choice"] == fastest and record["cpu"]["model"]
    for choice in ("openvino-cpu", "onnxruntime-cpu"):  # auto follows the record, whichever it names
        record_path(bundle).write_text(json.dumps({**record, "choice": choice}))
        assert open_backend(bundle).name == choice
        assert open_backend(bundle, "onnxruntime-cpu").name == "onnxruntime-cpu"  # a named backend still wins


def test_a_record_from_another_kind_of_cpu_is_not_used(tiny_bundle, tmp_path, monkeypatch):
    path = tmp_path / "bundle"
    shutil.copytree(tiny_bundle("wavlm"), path)
    bundle = Bundle.load(path)
    record_path(bundle).parent.mkdir()
    record_path(bundle).write_text(json.dumps({"choice": "openvino-cpu"}))
    assert open_backend(bundle).name == "openvino-cpu"
    other = tmp_path / "cpuinfo"
    other.write_text("model name\t: Some Other CPU\nflags\t\t: sse2 avx2\n")
    monkeypatch.setenv("SER_CPUINFO", str(other))
    assert open_backend(bundle).name == "onnxruntime-cpu"


def test_tune_never_picks_a_backend_the_int8_gate_did_not_judge(int8_bundle, tmp_path):
    bundle = Bundle.load(_gated_on_onnxruntime_only(int8_bundle, tmp_path / "bundle"))
    result = tune(bundle, batches=(1,), seconds=1.0, runs=3)
    openvino = next(m for m in result.measurements if m.backend == "openvino-cpu")
    assert not openvino.verified and "not openvino-cpu" in openvino.why and openvino.median_ms  # timed, not taken
    assert result.choice == "onnxruntime-cpu" and open_backend(bundle).name == "onnxruntime-cpu"


def test_ser_tune_prints_the_choice(tiny_bundle, tmp_path):
    path = tmp_path / "bundle"
    shutil.copytree(tiny_bundle("resnet18"), path)
    script = Path(sys.executable).parent / "ser-tune"
    result = subprocess.run([script, path, "--batch-sizes", "1", "--seconds", "1", "--runs", "3", "--json"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["choice"] in ("onnxruntime-cpu", "openvino-cpu") and len(record["measurements"]) == 2
    bad = subprocess.run([script, path, "--batch-sizes", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "positive integers" in bad.stderr


_CLOSE_OUT_OF_ORDER = """
import os, signal, sys
import numpy as np
from ser.bundle import Bundle
from ser.runtime.openvino import STATIC_AFTER, OpenVinoBackend

bundle = Bundle.load(sys.argv[1])
first, second = (OpenVinoBackend(bundle.onnx_path, bundle.manifest.inputs, threads=1) for _ in range(2))
first.activate()
second.activate()
feeds = {"audio": np.zeros((1, 16_000), np.float32), "lengths": np.array([16_000])}
for _ in range(STATIC_AFTER):  # a compile per shape: a third plugin, made after the second
    first.infer(feeds)
assert first.static_shapes_compiled
first.deactivate()
second.deactivate()
signal.signal(signal.SIGUSR1, lambda *_: print("handled"))  # Python's handlers all run on the signal stack
os.kill(os.getpid(), signal.SIGUSR1)
"""


def test_backends_closed_in_any_order_leave_python_signals_working(tiny_bundle):
    # Each OpenVINO plugin swaps the thread's signal stack; freed first-made-first they left it unmapped and
    # the next signal (Ctrl-C, torch's SIGCHLD) was a SIGSEGV. Run apart: a crash must not take pytest.
    script = [sys.executable, "-X", "faulthandler", "-c", _CLOSE_OUT_OF_ORDER, str(tiny_bundle("resnet18"))]
    result = subprocess.run(script, capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stdout.strip()) == (0, "handled"), result.stderr[-2000:]
