import csv
import json
from dataclasses import replace

from ser.bench.report import CSV_NAME, REPORT_NAME, ROW_FIELDS, print_table, rows, write_outputs
from ser.bench.results import Results

PNG = b"\x89PNG\r\n\x1a\n"


def test_rows_are_one_per_configuration_and_case_and_one_per_failed_configuration(make_results):
    results = make_results()
    table = rows(results)
    assert len(table) == 3 * 4 + 2  # three configurations × four cases, and two failed CUDA ones
    failed = [r for r in table if r["error"]]
    assert len(failed) == 2 and all(r["batch"] is None and r["backend"] == "onnxruntime-cuda" for r in failed)
    int8 = next(r for r in table if r["precision"] == "int8-dynamic" and (r["batch"], r["seconds"]) == (4, 4.0))
    assert int8["audio_x"] == int8["clips_per_s"] * 4
    assert int8["top1_agreement"] < 1 and int8["accuracy"] is not None and int8["cold_start_s"] == 0.6


def test_writes_json_csv_markdown_and_the_plots(make_results, tmp_path):
    results = make_results()
    write_outputs(results, tmp_path)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["configs"][0]["cases"][0]["samples_s"]
    assert Results.from_json(written).configs == results.configs, "results.json reads back as the same records"
    with open(tmp_path / CSV_NAME) as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == ROW_FIELDS and len(table) == 14
    report = (tmp_path / REPORT_NAME).read_text()
    assert "| wavlm:tiny | onnxruntime-cpu | int8-dynamic | 2 | 4 | 4 |" in report
    assert "## Failed configurations" in report and "no CUDAExecutionProvider" in report
    assert "### F1 per class" in report and "40 labelled clips" in report
    for name in ("latency_vs_batch.png", "latency_vs_duration.png", "pareto.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)
        assert f"]({name})" in report


def test_plots_need_the_data_they_show(make_results, tmp_path):
    results = make_results()
    configs = tuple(
        replace(c, cases=tuple(case for case in c.cases if case.seconds == 4), agreement=None)  # no Pareto plot
        for c in results.configs
    )
    results = replace(results, suite={**results.suite, "durations": [4]}, configs=configs)  # no duration plot
    write_outputs(results, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["latency_vs_batch.png"]


def test_terminal_table_lists_rows_and_failures(make_results):
    from rich.console import Console

    console = Console(record=True, width=200)
    print_table(make_results(), console)
    text = console.export_text()
    assert text.count("int8-dynamic") == 4 + 2 and "failed" in text  # four timed cases; the CUDA row and its error
    assert "wavlm:tiny/onnxruntime-cuda/fp32/t2: BackendError: no CUDAExecutionProvider" in text


def test_ser_is_set_against_its_fastest_peer_only_where_its_gate_vouches_for_the_engine():
    """openvino-cpu INT8 is the fastest of ser's rows but its gate never ran on OpenVINO: ser's row is then
    the ONNX Runtime one, and the ratio is over the fastest peer (OpenVINO's own INT8 beats PyTorch's)."""
    from ser.bench.report import against_peers, markdown
    from ser.bench.results import Case, ConfigResult, speedups

    def config(backend, precision, ms, gate=None, reference=False):
        return ConfigResult(
            key=f"wavlm:base/{backend}/{precision}/t2", model_key="wavlm:base", model="wavlm", size="base",
            checkpoint=None, backend=backend, precision=precision, threads=2, device="cpu", reference=reference,
            cases=(Case(1, 4.0, tuple(ms / 1000 * f for f in (0.99, 1.0, 1.01))),),
            export=None if gate is None else {"gate_backends": gate, "max_abs_logit_error": 0.1},
        )  # fmt: skip

    configs = speedups([
        config("pytorch-eager", "fp32", 400, reference=True),
        config("onnxruntime-cpu", "int8-static", 80, gate=["onnxruntime-cpu"]),
        config("openvino-cpu", "int8-static", 60, gate=["onnxruntime-cpu"]),
        config("openvino", "int8-static", 100),
        config("pytorch-eager", "int8-dynamic", 200),
    ])  # fmt: skip
    results = Results(suite={}, environment={}, started="", wall_s=0.0, clips=(), configs=tuple(configs))
    (row,) = against_peers(results)
    assert (row["ser"].backend, row["peer"].backend) == ("onnxruntime-cpu", "openvino")
    assert row["ser_speedup"] == 5.0 and row["peer_speedup"] == 4.0 and row["ratio"] == 1.25
    suite = {"name": "x", "description": "", "timing": {"warmup": 1, "min_runs": 1, "max_runs": 1, "seconds": 1}}
    env = {"cpu": {"model": "cpu", "cores": 2, "flags": []}, "gpus": [], "memory_gib": 1, "versions": {}}
    report = markdown(replace(results, suite=suite, environment=env), [])
    assert "ser at or ahead in 1 of 1 cases" in report and "gate passed (onnxruntime-cpu)" in report
