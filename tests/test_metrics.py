import numpy as np
import pytest
from sklearn import metrics as sk

from ser.metrics import Agreement, classification_metrics, plot_confusion

LABELS = ("a", "b", "c", "d")
# Class "c" is never predicted (precision 0/0) and class "d" never occurs (recall 0/0).
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0, 1, 1]
Y_PRED = [0, 1, 0, 1, 1, 0, 1, 3, 0, 0, 1, 0]


def test_against_scikit_learn():
    m = classification_metrics(Y_TRUE, Y_PRED, LABELS)
    ids = list(range(len(LABELS)))
    precision, recall, f1, support = sk.precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=ids, zero_division=0)
    assert m.accuracy == pytest.approx(sk.accuracy_score(Y_TRUE, Y_PRED))
    assert list(m.precision.values()) == pytest.approx(precision)
    assert list(m.recall.values()) == pytest.approx(recall)
    assert list(m.f1.values()) == pytest.approx(f1)
    assert list(m.support.values()) == support.tolist()
    assert m.macro_f1 == pytest.approx(sk.f1_score(Y_TRUE, Y_PRED, labels=ids, average="macro", zero_division=0))
    assert m.weighted_f1 == pytest.approx(sk.f1_score(Y_TRUE, Y_PRED, labels=ids, average="weighted", zero_division=0))
    assert np.array(m.confusion).tolist() == sk.confusion_matrix(Y_TRUE, Y_PRED, labels=ids).tolist()


def test_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="equal, non-empty"):
        classification_metrics([0, 1], [0], LABELS)


def test_plot_writes_a_png(tmp_path):
    plot_confusion(classification_metrics(Y_TRUE, Y_PRED, LABELS), tmp_path / "c.png", "title")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]


def test_agreement_counts_top1_matches_and_logit_errors():
    reference = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 3.0, 0.0], [0.5, 0.0, 0.0]])
    other = reference.copy()
    other[3] = [0.0, 0.4, 0.0]  # the last clip's answer changes
    result = Agreement.of(reference, other).to_dict()
    assert result["top1_agreement"] == pytest.approx(0.75) and (result["agreed"], result["clips"]) == (3, 4)
    assert result["max_abs_logit_error"] == pytest.approx(0.5)
    assert result["mean_abs_logit_error"] == pytest.approx(0.9 / 12)
    with pytest.raises(ValueError, match="equal"):
        Agreement.of(reference, reference[:2])
