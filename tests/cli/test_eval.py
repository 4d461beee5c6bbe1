"""ser-eval on a dimensional checkpoint: CCC, Pearson and MAE per dimension against a ratings CSV, held to the
published model's answers scored by scikit-learn and numpy's own formulas."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import mean_absolute_error

from ser.cli.eval import eval_command
from tests.export.speech_classification_reference import DIMENSIONS, load_published, published_answer


def _ccc(x, y):
    return 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_a_dimensional_model_is_scored_by_ccc_pearson_and_mae(tmp_path, write_clip, dimensional_checkpoint):
    rng = np.random.default_rng(0)
    clips = [write_clip(f"{i}.wav", seconds=0.5 + 0.15 * i, seed=i) for i in range(8)]
    ratings = rng.uniform(0, 1, size=(len(clips), 3))
    with (tmp_path / "ratings.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", *DIMENSIONS])
        writer.writerows([[c.name, *r] for c, r in zip(clips, ratings, strict=True)])
        writer.writerow(["broken.wav", 0.5, 0.5, 0.5])  # listed, but not audio: skipped, saying so
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really")
    result = CliRunner().invoke(eval_command, [str(dimensional_checkpoint), "--data", str(tmp_path / "ratings.csv"),
                                               "--out", str(tmp_path / "eval")])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["dimensions"] == list(DIMENSIONS) and metrics["clips"] == 8
    assert "skipped" in result.output and "broken.wav" in result.output

    import soundfile as sf

    model, extractor = load_published(dimensional_checkpoint)
    predicted = np.stack([published_answer(model, extractor, sf.read(c, dtype="float32")[0])[1] for c in clips])
    for i, name in enumerate(DIMENSIONS):
        assert metrics["ccc"][name] == pytest.approx(_ccc(ratings[:, i], predicted[:, i]), abs=1e-4)
        assert metrics["pearson"][name] == pytest.approx(np.corrcoef(ratings[:, i], predicted[:, i])[0, 1], abs=1e-4)
        assert metrics["mae"][name] == pytest.approx(mean_absolute_error(ratings[:, i], predicted[:, i]), abs=1e-4)


def test_a_ratings_csv_without_a_dimension_or_with_a_bad_value_is_refused(tmp_path, dimensional_checkpoint):
    (tmp_path / "missing.csv").write_text("path,arousal,valence\na.wav,0.1,0.2\n")
    result = CliRunner().invoke(eval_command, [str(dimensional_checkpoint), "--data", str(tmp_path / "missing.csv"),
                                               "--out", str(tmp_path / "e")])  # fmt: skip
    assert result.exit_code == 1 and "needs a header with path, arousal, dominance, valence" in result.output
    (tmp_path / "bad.csv").write_text("path,arousal,dominance,valence\na.wav,0.1,nan,0.2\n")
    result = CliRunner().invoke(eval_command, [str(dimensional_checkpoint), "--data", str(tmp_path / "bad.csv"),
                                               "--out", str(tmp_path / "e")])  # fmt: skip
    assert result.exit_code == 1
    assert "bad.csv:2: every one of arousal, dominance, valence must be a number" in result.output
