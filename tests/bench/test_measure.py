import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from ser.bench.measure import latency_summary, median_ratio, pareto_front, throughput


def test_latency_summary_percentiles_mean_and_spread_in_ms():
    summary = latency_summary([i / 1000 for i in range(1, 101)])  # 1 … 100 ms
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["p90_ms"] == pytest.approx(90.1)
    assert summary["p99_ms"] == pytest.approx(99.01)
    assert summary["mean_ms"] == pytest.approx(50.5)
    assert summary["std_ms"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert summary["min_ms"] == pytest.approx(1.0) and summary["runs"] == 100
    assert latency_summary([0.002])["std_ms"] == 0.0
    with pytest.raises(ValueError, match="at least one"):
        latency_summary([])


def test_throughput_is_clips_and_audio_seconds_per_second():
    assert throughput(batch=8, seconds=4.0, mean_ms=100.0) == pytest.approx({"clips_per_s": 80.0, "audio_x": 320.0})


def test_median_ratio_bounds_cover_noise_and_exclude_a_real_change():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 0.05, 40), rng.normal(1.0, 0.05, 40)
    ratio, low, high = median_ratio(a, b)
    assert low < 1 < high and low < ratio < high
    ratio, low, high = median_ratio(a, 1.3 * b)
    assert 1.2 < low < ratio < high < 1.45


def test_pareto_front_keeps_points_no_other_beats_on_both_axes():
    points = [(1.0, 0.90), (2.0, 0.89), (3.0, 0.80), (2.5, 0.70), (1.5, 0.85)]
    assert pareto_front(points) == [0, 1, 2]


def test_run_scores_accuracy_and_macro_f1_like_scikit_learn(make_results):
    results = make_results()
    truth = [r["label"] for r in results.clips]
    labels = list(results.configs[0].labels)
    for record in results.configs:
        if record.logits is None:
            assert record.accuracy is None
            continue
        predicted = [labels[i] for i in np.argmax(record.logits, axis=1)]
        assert record.accuracy.accuracy == pytest.approx(accuracy_score(truth, predicted))
        sk_f1 = f1_score(truth, predicted, labels=labels, average=None, zero_division=0)
        assert list(record.accuracy.f1.values()) == pytest.approx(sk_f1)
        assert record.accuracy.macro_f1 == pytest.approx(
            f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)
        )
    reference = next(r for r in results.configs if r.reference)
    int8 = next(r for r in results.configs if r.precision == "int8-dynamic")
    assert reference.agreement.top1_agreement == 1.0 and reference.agreement.max_abs_logit_error == 0
    assert 0.75 < int8.agreement.top1_agreement < 1.0


def test_run_gives_every_case_its_speedup_over_the_reference(make_results):
    for record in make_results().configs:
        for case in record.cases:
            expected = {"pytorch-eager": 1.0, "onnxruntime-cpu": 2.0 if record.precision == "fp32" else 4.0}
            assert case.speedup == pytest.approx(expected[record.backend], rel=0.05)
            summary = case.summary
            assert summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"]
