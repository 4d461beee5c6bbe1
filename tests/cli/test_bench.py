"""A tiny suite end to end: real exports, real worker processes, the real report."""

import csv
import json
import re

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from ser.cli.bench import bench_command
from ser.labels import LABELS
from ser.runtime.onnxrt import device_problem
from ser.runtime.tensorrt import unavailable_reason


@pytest.fixture
def tiny_suite(tmp_path, write_clip, tiny_checkpoint):
    for label in LABELS:
        (tmp_path / "corpus" / label).mkdir(parents=True)
        for i in range(2):
            write_clip(f"corpus/{label}/{i}.wav", seconds=0.5 + 0.25 * i, seed=LABELS.index(label) * 2 + i)
    suite = {
        "name": "tiny",
        "models": [
            {"model": "wavlm", "checkpoint": str(tiny_checkpoint("wavlm"))},
            {"model": "resnet18", "size": "tiny"},
        ],
        "backends": ["pytorch-eager", "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt", "openvino"],
        "precisions": ["fp32", "int8-dynamic"],
        "batch_sizes": [1, 2],
        "durations": [0.5, 1],
        "threads": [1],
        "data": {"path": str(tmp_path / "corpus")},
        "timing": {"warmup": 1, "min_runs": 2, "max_runs": 3, "seconds": 0.1},
        "export": {"eval_clips": 14, "gate": False},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_run_writes_every_result_and_reports_what_failed(tiny_suite, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(bench_command, ["run", str(tiny_suite), "--out", str(out)])
    assert result.exit_code == 0, result.output
    # 2 models × (reference, PyTorch dynamic INT8, 2 ORT CPU, 2 ORT CUDA, TensorRT FP32, OpenVINO FP32)
    assert "16 configurations" in result.output
    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["cpu"]["cores"] >= 1 and results["environment"]["versions"]["onnxruntime"]
    records = {r["key"]: r for r in results["configs"]}
    cuda = [r for r in records.values() if r["backend"] == "onnxruntime-cuda"]
    if (problem := device_problem("cuda")) is not None:
        assert all(r["error"] == f"backend unavailable here: {problem}" and not r["cases"] for r in cuda)
    tensorrt = [r for r in records.values() if r["backend"] == "tensorrt"]
    if unavailable_reason() is not None:
        assert all(r["error"].startswith("backend unavailable here: ") and not r["cases"] for r in tensorrt)
        assert not list((out / "bundles").glob("*-trt"))  # nothing exported for it
    for record in records.values():
        if record["backend"] in ("onnxruntime-cuda", "tensorrt"):
            continue
        assert record["error"] is None, (record["key"], record["error"])
        assert [(c["batch"], c["seconds"]) for c in record["cases"]] == [(1, 0.5), (1, 1.0), (2, 0.5), (2, 1.0)]
        assert all(2 <= c["runs"] <= 3 and len(c["samples_s"]) == c["runs"] for c in record["cases"])
        assert record["cold"]["cold_start_s"] > 0 and record["bytes"] > 0
        # each backend in its own process: ONNX Runtime's never loads torch and holds far less memory
        assert record["memory"]["torch_imported"] == record["backend"].startswith("pytorch")
        labels = record["labels"]
        predicted = np.argmax(record["logits"], axis=1)
        truth = [labels.index(c["label"]) for c in results["clips"]]
        assert record["accuracy"]["accuracy"] == pytest.approx(np.mean(predicted == truth))
    for model in ("wavlm", "resnet18"):
        reference = next(r for r in records.values() if r["model"] == model and r["reference"])
        fp32 = next(r for r in records.values() if r["model"] == model and r["key"].endswith("cpu/fp32/t1"))
        assert all(c["speedup"] == 1.0 for c in reference["cases"])
        assert fp32["agreement"]["top1_agreement"] == 1.0 and fp32["agreement"]["max_abs_logit_error"] < 1e-3
        assert fp32["memory"]["peak_rss_mib"] < reference["memory"]["peak_rss_mib"]
        assert all(c["speedup"] > 0 for c in fp32["cases"])
        openvino = next(r for r in records.values() if r["model"] == model and r["backend"] == "openvino")
        assert openvino["agreement"]["top1_agreement"] == 1.0 and openvino["agreement"]["max_abs_logit_error"] < 1e-3
        assert openvino["export"]["converter"].startswith("openvino ")
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 10 * 4 + 6  # 5 that ran per model, 4 cases each; 6 failed
    report = (out / "report.md").read_text()
    assert "# Benchmark `tiny`" in report and "## Failed configurations" in report
    assert (out / "pareto.png").exists() and (out / "bundles").is_dir()
    assert not list(tmp_path.glob(".out.staging-*"))

    again = CliRunner().invoke(bench_command, ["run", str(tiny_suite), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    compared = CliRunner().invoke(bench_command, ["compare", str(out), str(out)])
    assert compared.exit_code == 0 and "same" in compared.output and "slower" not in compared.output


def test_a_bad_suite_is_refused_before_anything_runs(tmp_path):
    suite = tmp_path / "bad.yaml"
    suite.write_text("models: [{model: wavlm, size: tiny}]\nbackends: [onnxruntime-cpu]\nbatch_sizes: [0]\n")
    result = CliRunner().invoke(bench_command, ["run", str(suite), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "batch_sizes[0]: must be at least 1" in result.output
    assert not (tmp_path / "out").exists()


def test_a_dimensional_model_is_scored_by_ccc_against_pytorch_and_the_ratings(
    tmp_path, write_clip, dimensional_checkpoint
):
    """A ratings CSV (path,arousal,dominance,valence): every backend's CCC per dimension against the ratings,
    and its fidelity to PyTorch as the lowest CCC of its dimensions."""
    rows = [{"path": write_clip(f"{i}.wav", seconds=0.6 + 0.2 * i, seed=i).name, "arousal": 0.1 * i,
             "dominance": 0.5 - 0.05 * i, "valence": (i % 3) / 3} for i in range(6)]  # fmt: skip
    with (tmp_path / "ratings.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    suite = {
        "name": "dimensional",
        "models": [{"model": "wav2vec2", "checkpoint": str(dimensional_checkpoint)}],
        "backends": ["pytorch-eager", "onnxruntime-cpu"],
        "batch_sizes": [1],
        "durations": [0.5],
        "threads": [1],
        "data": {"path": str(tmp_path / "ratings.csv"), "dimensions": ["arousal", "dominance", "valence"]},
        "timing": {"warmup": 1, "min_runs": 2, "max_runs": 3, "seconds": 0.1},
    }
    (tmp_path / "dim.yaml").write_text(yaml.safe_dump(suite))
    result = CliRunner().invoke(bench_command, ["run", str(tmp_path / "dim.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    configs = {r["backend"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["configs"]}
    onnx, torch_ = configs["onnxruntime-cpu"], configs["pytorch-eager"]
    assert onnx["answer"] == "dimensions" and onnx["error"] is None
    assert min(onnx["agreement"]["ccc"]) > 0.999 and "top1_agreement" not in onnx["agreement"]
    for name in ("arousal", "dominance", "valence"):
        assert onnx["rated"]["ccc"][name] == pytest.approx(torch_["rated"]["ccc"][name], abs=1e-3)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Dimensions against the ratings" in report and re.search(r"CCC (0\.999\d|1\.0000)", report)


def _run_grouped(tmp_path, workers: int, durations: list[float]) -> list[dict]:
    """A tiny ResNet18 suite (PyTorch and ONNX Runtime, FP32 and dynamic INT8) run with `timing.workers`;
    the configurations of its results.json."""
    suite = {
        "name": "grouped",
        "models": [{"model": "resnet18", "size": "tiny"}],
        "backends": ["pytorch-eager", "onnxruntime-cpu"],
        "precisions": ["fp32", "int8-dynamic"],
        "batch_sizes": [1],
        "durations": durations,
        "threads": [1],
        "timing": {"warmup": 1, "min_runs": 2, "max_runs": 3, "seconds": 0.1, "workers": workers},
    }
    (tmp_path / "grouped.yaml").write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    result = CliRunner().invoke(bench_command, ["run", str(tmp_path / "grouped.yaml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())["configs"]


def test_workers_in_groups_are_timed_against_the_reference_of_their_own_rounds(tmp_path):
    """`timing.workers: 1`: the reference stays alive while the other configurations run one at a time, so
    each one's speed-up is against the reference's samples from its own rounds, and the reference's record
    holds every group's samples."""
    configs = _run_grouped(tmp_path, workers=1, durations=[0.5, 1])
    reference = next(r for r in configs if r["reference"])
    others = [r for r in configs if not r["reference"]]
    assert len(others) == 3 and all(r["error"] is None for r in configs)
    for index, ref_case in enumerate(reference["cases"]):
        cases = [r["cases"][index] for r in others]
        # one round: each live worker once, so the reference ran as often as the group's member, per group
        assert all(len(c["reference_samples_s"]) == len(c["samples_s"]) for c in cases)
        assert len(ref_case["samples_s"]) == sum(len(c["samples_s"]) for c in cases)
        assert sorted(ref_case["samples_s"]) == sorted(s for c in cases for s in c["reference_samples_s"])
        for case in cases:
            expected = np.median(case["reference_samples_s"]) / np.median(case["samples_s"])
            assert case["speedup"] == pytest.approx(expected)
    assert all(r["memory"]["peak_rss_mib"] > 0 for r in configs)


def test_grouped_rows_of_one_precision_share_their_rounds(tmp_path):
    """`timing.workers: 2` over three rows: the two INT8 rows (ser's and the PyTorch peer's) are timed in one
    group, so the report compares them over the same reference samples; the FP32 row runs apart."""
    configs = _run_grouped(tmp_path, workers=2, durations=[0.5])
    rows = {(r["backend"], r["precision"]): r["cases"][0] for r in configs}
    peer, ser = rows["pytorch-eager", "int8-dynamic"], rows["onnxruntime-cpu", "int8-dynamic"]
    fp32 = rows["onnxruntime-cpu", "fp32"]
    assert peer["reference_samples_s"] == ser["reference_samples_s"]
    assert not set(fp32["reference_samples_s"]) & set(ser["reference_samples_s"])
