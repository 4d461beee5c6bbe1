from pathlib import Path

import pytest

from ser.bench.suite import BACKENDS, REFERENCE, SuiteError, load_suite, parse_suite

SUITES = sorted(Path(__file__).parents[2].joinpath("benchmarks", "suites").glob("*.yaml"))
MINIMAL = {"models": [{"model": "wavlm", "size": "tiny"}], "backends": ["onnxruntime-cpu"]}


def parse(**changes):
    return parse_suite({**MINIMAL, **changes}, Path("s.yaml"))


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_shipped_suites_parse(path):
    suite = load_suite(path)
    assert suite.name == path.stem
    assert all(
        config.model.model in ("wav2vec2", "hubert", "wavlm", "resnet18", "whisper") for config in suite.configs()
    )


def test_shipped_suites_are_the_ones_the_issues_name():
    shipped = {"cpu-quick", "cpu-full", "cpu-engines", "gpu", "cpu-whisper", "cpu-whisper-large"}
    assert {p.stem for p in SUITES} == shipped


def test_matrix_expands_adds_the_reference_and_skips_pairs_a_backend_cannot_run():
    suite = parse(
        backends=["pytorch-eager", "onnxruntime-cpu"],
        precisions=["fp32", "int8-static"],
        threads=[1, 2],
        data={"path": "corpus"},
    )
    keys = [c.key for c in suite.configs()]
    assert len(keys) == len(set(keys)) == 2 * 3  # per thread count: pytorch fp32, ort fp32, ort int8
    assert not any("pytorch" in key and "int8" in key for key in keys), "PyTorch has no static INT8 here"
    peers = parse(backends=["pytorch-eager", "openvino"], precisions=["fp32", "int8-dynamic", "int8-static"]).configs()
    assert [(c.backend, c.precision, c.device) for c in peers] == [
        ("pytorch-eager", "fp32", "cpu"), ("pytorch-eager", "int8-dynamic", "cpu"),  # quantize_dynamic
        ("openvino", "fp32", "cpu"), ("openvino", "int8-static", "cpu"),  # NNCF
    ]  # fmt: skip
    assert {c.export_key for c in peers if c.needs_export} == {("fp32", "openvino"), ("int8-static", "openvino")}
    on_gpu = parse(device="cuda", backends=["pytorch-eager"], precisions=["fp32", "int8-dynamic"]).configs()
    assert [(c.backend, c.precision) for c in on_gpu] == [REFERENCE], "PyTorch's dynamic INT8 is CPU-only"
    on_cpu = parse(backends=["pytorch-eager", "onnxruntime-cpu"], precisions=["fp16"]).configs()
    assert [(c.backend, c.precision) for c in on_cpu] == [REFERENCE, ("onnxruntime-cpu", "fp16")]
    on_cuda = parse(device="cuda", backends=["pytorch-eager"], precisions=["fp32", "fp16"]).configs()
    assert [(c.backend, c.precision) for c in on_cuda] == [REFERENCE, ("pytorch-eager", "fp16")]
    only_ort = parse(precisions=["int8-dynamic"]).configs()
    assert [(c.backend, c.precision) for c in only_ort] == [REFERENCE, ("onnxruntime-cpu", "int8-dynamic")]
    assert only_ort[0].is_reference and not only_ort[1].is_reference
    assert parse(batch_sizes=[1, 8], durations=[2, 4]).cases() == [(1, 2.0), (1, 4.0), (8, 2.0), (8, 4.0)]


def test_tensorrt_configurations_get_their_own_export():
    suite = parse(
        backends=["onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"], precisions=["fp16", "int8-dynamic"]
    )
    keys = {(c.backend, c.precision): c.export_key for c in suite.configs() if c.needs_export}
    assert keys == {
        ("onnxruntime-cuda", "fp16"): ("fp16", "onnx"),
        ("onnxruntime-cuda", "int8-dynamic"): ("int8-dynamic", "onnx"),
        ("onnxruntime-tensorrt", "fp16"): ("fp16", "onnx"),  # the provider takes the ONNX Runtime bundle
        ("tensorrt", "fp16"): ("fp16", "tensorrt"),  # TensorRT has no dynamic INT8: that pair is not run
    }
    assert {c.device for c in suite.configs() if c.backend != "pytorch-eager"} == {"cuda", "tensorrt"}


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        ({"backends": ["onnxruntime-gpu"]}, "backends[0]", "'onnxruntime-gpu' is not one of"),
        ({"precisions": ["fp32", "int4"]}, "precisions[1]", "'int4' is not one of"),
        ({"models": [{"model": "conformer", "size": "tiny"}]}, "models[0].model", "'conformer' is not one of"),
        ({"models": [{"model": "wavlm", "size": "huge"}]}, "models[0].size", "'huge' is not one of"),
        ({"models": [{"model": "wavlm"}]}, "models[0]", "needs size"),
        ({"models": [{"model": "wavlm", "size": "tiny", "checkpoint": "x"}]}, "models[0]", "not both"),
        ({"models": [{"model": "wavlm", "sise": "tiny"}]}, "models[0].sise", "unknown key"),
        ({"batch_sizes": [1, 0]}, "batch_sizes[1]", "at least 1"),
        ({"batch_sizes": [1.5]}, "batch_sizes[0]", "must be an integer"),
        ({"durations": ["long"]}, "durations[0]", "must be a number"),
        ({"threads": []}, "threads", "non-empty list"),
        ({"timing": {"seconds": -1}}, "timing.seconds", "at least 0"),
        ({"timing": {"min_runs": 9, "max_runs": 3}}, "timing.min_runs", "above timing.max_runs"),
        ({"timing": {"rounds": 3}}, "timing.rounds", "unknown key"),
        ({"export": {"gate": "yes"}}, "export.gate", "true or false"),
        ({"data": {"clips": 3}}, "data.path", "is required"),
        ({"device": "tpu"}, "device", "'tpu' is not one of"),
        ({"modles": []}, "modles", "unknown key"),
    ],
)
def test_bad_suites_get_an_error_naming_the_file_and_the_key(changes, key, reason):
    with pytest.raises(SuiteError) as error:
        parse(**changes)
    assert str(error.value).startswith(f"s.yaml: {key}")
    assert reason in str(error.value)


def test_missing_keys_bad_yaml_and_missing_files(tmp_path):
    with pytest.raises(SuiteError, match=r"s\.yaml: backends: is required"):
        parse_suite({"models": ["wavlm"]}, Path("s.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [wavlm\nbackends: x")
    with pytest.raises(SuiteError, match=r"bad\.yaml: not valid YAML"):
        load_suite(bad)
    with pytest.raises(SuiteError, match="no such suite file"):
        load_suite(tmp_path / "absent.yaml")
    with pytest.raises(SuiteError, match="the top level: must be a mapping"):
        parse_suite(["models"], Path("s.yaml"))


def test_a_checkpoint_names_its_own_model(tiny_checkpoint, tmp_path):
    suite = parse(models=[{"checkpoint": str(tiny_checkpoint("unispeech-sat"))}])
    assert suite.models[0].model == "unispeech-sat"
    with pytest.raises(SuiteError, match=r"s\.yaml: models\[0\]\.checkpoint: .*no such checkpoint folder"):
        parse(models=[{"checkpoint": str(tmp_path / "absent")}])
    with pytest.raises(SuiteError, match=r"s\.yaml: models\[0\]: needs model"):
        parse(models=[{}])


def test_the_runtimes_backends_have_the_same_names_in_suites():
    from ser.runtime.recognizer import BACKENDS as RUNTIME

    assert set(RUNTIME) - {"auto"} <= set(BACKENDS)
