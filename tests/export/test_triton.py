import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from ser.bundle import Bundle
from ser.export.triton import TritonConfigError, TritonOptions, check_triton_model, write_triton_repository
from ser.runtime import EmotionRecognizer
from ser.runtime.recognizer import pad_batch
from tests.conftest import speech_like


def test_repository_layout_and_config(tiny_bundle, tmp_path):
    bundle = Bundle.load(tiny_bundle("resnet18"))
    (tmp_path / "other-model").mkdir()  # someone else's model stays put
    model_dir = write_triton_repository(bundle, tmp_path, TritonOptions(max_batch=8))
    assert model_dir == tmp_path / "resnet18"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "other-model", "resnet18", "resnet18/1", "resnet18/1/model.onnx",
        "resnet18/config.pbtxt", "resnet18/labels.txt",
    ]  # fmt: skip
    assert (model_dir / "1" / "model.onnx").read_bytes() == bundle.onnx_path.read_bytes()
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())
    assert (config.name, config.backend, config.max_batch_size) == ("resnet18", "onnxruntime", 8)
    assert [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in config.input] == [
        ("audio", "TYPE_FP32", [-1]),
        ("lengths", "TYPE_INT64", [1]),
    ]
    assert list(config.output[0].dims) == [7]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert (model_dir / "labels.txt").read_text().split() == list(bundle.manifest.labels)


def test_gpu_tensorrt_options(tiny_bundle, tmp_path):
    bundle = Bundle.load(tiny_bundle("resnet18"))
    model_dir = write_triton_repository(bundle, tmp_path, TritonOptions(name="ser-emotion", gpu=True, tensorrt=True))
    config = check_triton_model(model_dir)
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    with pytest.raises(TritonConfigError, match="--triton-gpu"):
        TritonOptions(tensorrt=True)
    with pytest.raises(FileExistsError):
        write_triton_repository(bundle, tmp_path, TritonOptions(name="ser-emotion"))


def test_the_repository_graph_answers_as_triton_would_feed_it(tiny_bundle, tmp_path):
    """Triton sends lengths as [batch, 1] and reshapes it to [batch]; the graph must take the result."""
    bundle = Bundle.load(tiny_bundle("wavlm"))
    model_dir = write_triton_repository(bundle, tmp_path)
    clips = [speech_like(1.0, seed=1), speech_like(0.7, seed=2)]
    audio, lengths = pad_batch(clips)
    triton_lengths = lengths[:, None]  # what a client sends for dims [1]
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"audio": audio, "lengths": triton_lengths.reshape(-1)})
    with EmotionRecognizer.load(bundle) as recognizer:
        expected = [p.label for p in recognizer.classify(clips)]
    assert [bundle.manifest.labels[i] for i in logits.argmax(axis=1)] == expected


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.replace("data_type: TYPE_INT64", "data_type: TYPE_INT32"), "lengths is TYPE_INT64 in the graph"),
        (lambda c: c.replace('name: "resnet18"', 'name: "other"'), "must match the folder"),
        (lambda c: c.replace("dims: 7", "dims: 7\n  dims: 1"), "rank 2 in the graph"),
        (lambda c: c.replace('name: "logits"', 'name: "scores"'), "'logits' is not declared"),
        (lambda c: c.replace("max_batch_size: 16", "max_batch_size: 2"), "preferred_batch_size exceeds"),
        (lambda c: c.replace("dims: -1", "dimz: -1"), "config.pbtxt"),
    ],
)
def test_check_catches_what_triton_would_refuse(tiny_bundle, tmp_path, edit, message):
    model_dir = write_triton_repository(Bundle.load(tiny_bundle("resnet18")), tmp_path)
    config = model_dir / "config.pbtxt"
    config.write_text(edit(config.read_text()))
    with pytest.raises(TritonConfigError, match=message):
        check_triton_model(model_dir)


def test_missing_version_folder(tiny_bundle, tmp_path):
    model_dir = write_triton_repository(Bundle.load(tiny_bundle("resnet18")), tmp_path)
    (model_dir / "1" / "model.onnx").unlink()
    with pytest.raises(TritonConfigError, match="no version folder"):
        check_triton_model(model_dir)


def test_python_flavour_layout_and_check(tiny_bundle, tmp_path):
    bundle = Bundle.load(tiny_bundle("wavlm"))
    model_dir = write_triton_repository(bundle, tmp_path, TritonOptions(backend="python", max_batch=8, threads=1))
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == [
        "1", "1/bundle", "1/bundle/manifest.json", "1/bundle/model.onnx", "1/model.py", "config.pbtxt", "labels.txt",
    ]  # fmt: skip
    config = check_triton_model(model_dir)
    assert config.backend == "python" and config.parameters["threads"].string_value == "1"
    inputs = {i.name: i for i in config.input}
    assert inputs["AUDIO"].allow_ragged_batch and all(i.optional for i in config.input)
    assert Bundle.load(model_dir / "1" / "bundle").manifest == bundle.manifest
    (model_dir / "1" / "bundle" / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(TritonConfigError, match="the bundle in 1/bundle does not load"):
        check_triton_model(model_dir)
    with pytest.raises(TritonConfigError, match="python flavour runs ser's CPU runtime"):
        TritonOptions(backend="python", gpu=True)
