import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from ser.bench.compare import compare, load_results, unmatched
from ser.cli.bench import bench_command


def test_same_code_twice_is_within_noise_and_a_slowdown_is_flagged(make_results):
    before = make_results(seed=0)
    assert {c.verdict for c in compare(before, make_results(seed=1))} == {"same"}
    changes = compare(before, make_results(seed=1, slowdown=1.25))
    assert {c.verdict for c in changes} == {"slower"}
    assert all(1.15 < c.low < c.ratio < c.high < 1.35 for c in changes)
    assert {c.verdict for c in compare(make_results(seed=1, slowdown=1.25), before)} == {"faster"}
    assert len(changes) == 12  # the failed configurations have no cases to compare


def test_a_change_below_the_threshold_is_not_reported_even_when_it_is_real(make_results):
    changes = compare(make_results(seed=0), make_results(seed=1, slowdown=1.03), threshold=0.05)
    assert {c.verdict for c in changes} == {"same"}


def test_unmatched_configurations_are_listed(make_results):
    before, after = make_results(), make_results()
    after = replace(after, configs=after.configs[:2])
    only_a, only_b = unmatched(before, after)
    assert only_a == ["wavlm:tiny/onnxruntime-cpu/int8-dynamic/t2"] and only_b == []


def test_compare_command_exits_nonzero_on_a_regression_when_asked(make_results, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b.json"
    a.mkdir()
    (a / "results.json").write_text(json.dumps(make_results(seed=0).to_json()))
    b.write_text(json.dumps(make_results(seed=1, slowdown=1.5).to_json()))
    result = CliRunner().invoke(bench_command, ["compare", str(a), str(b)])
    assert result.exit_code == 0 and "slower" in result.output
    result = CliRunner().invoke(bench_command, ["compare", str(a), str(b), "--fail-on-regression"])
    assert result.exit_code == 1 and "12 case(s) slower" in result.output


def test_compare_refuses_what_is_not_a_results_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = CliRunner().invoke(bench_command, ["compare", str(bad), str(tmp_path / "absent.json")])
    assert result.exit_code == 2 and "not a ser-bench results.json" in result.output
    with pytest.raises(ValueError, match="no such results file"):
        load_results(tmp_path / "absent.json")
