"""The Parquet output: one schema for every part, parts whole or absent, and what a rerun may skip."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ser.answer import AnswerSpec, Prediction
from ser.batch.output import Output, result_schema, result_table
from ser.batch.storage import BatchError, Storage

CATEGORIES = AnswerSpec("categories", ("angry", "calm"), ("angry", None))
DIMENSIONS = AnswerSpec("dimensions", ("arousal", "valence"))


def _rows(answer: AnswerSpec, paths, bundle_id="b1") -> pa.Table:
    results = [
        answer.prediction([0.2, 0.8], 1.5) if i % 2 == 0 else f"{path}: the file is empty (0 bytes)"
        for i, path in enumerate(paths)
    ]
    return result_table(result_schema(answer), answer, paths, results, bundle_id)


def test_rows_carry_the_answer_or_the_error_under_one_schema():
    table = _rows(CATEGORIES, ["x.wav", "y.wav"])
    assert table.schema.names == ["path", "label", "canonical", "score_angry", "score_calm", "duration_s",
                                  "bundle_id", "error"]  # fmt: skip
    ok, failed = table.to_pylist()
    assert ok == {"path": "x.wav", "label": "calm", "canonical": None, "score_angry": pytest.approx(0.2),
                  "score_calm": pytest.approx(0.8), "duration_s": 1.5, "bundle_id": "b1", "error": None}  # fmt: skip
    assert failed["error"] == "y.wav: the file is empty (0 bytes)" and failed["score_calm"] is None
    errors_only = result_table(result_schema(CATEGORIES), CATEGORIES, ["z"], ["z: broken"], "b1")
    assert errors_only.schema == table.schema  # an all-error part types its columns like the others
    dims = _rows(DIMENSIONS, ["x.wav"])
    assert dims.schema.names[3:5] == ["dimension_arousal", "dimension_valence"]
    assert dims.to_pylist()[0]["label"] is None and dims.to_pylist()[0]["dimension_valence"] == pytest.approx(0.8)
    assert isinstance(CATEGORIES.prediction([0.2, 0.8], 1.0), Prediction)


def test_parts_are_written_whole_by_rows_and_on_flush(tmp_path):
    out = Output(str(tmp_path / "out"), Storage(), result_schema(CATEGORIES), part_rows=3, flush_s=3600)
    out.prepare()
    out.add(_rows(CATEGORIES, ["a", "b"]))
    assert out.parts_written == 0  # under part_rows: still queued
    out.add(_rows(CATEGORIES, ["c", "d"]))
    assert out.parts_written == 1
    out.add(_rows(CATEGORIES, ["e"]))
    out.flush()
    out.flush()  # nothing queued: no empty part
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(names) == 2 and all(n.startswith("part-") and n.endswith(".parquet") for n in names)
    assert sorted(out.read().column("path").to_pylist()) == ["a", "b", "c", "d", "e"]
    assert pq.read_table(tmp_path / "out" / names[0]).schema.equals(result_schema(CATEGORIES))


def test_done_is_by_path_and_bundle_id(tmp_path):
    out = Output(str(tmp_path), Storage(), result_schema(CATEGORIES))
    out.prepare()
    out.add(_rows(CATEGORIES, ["a", "b"], bundle_id="b1"))
    out.add(_rows(CATEGORIES, ["c"], bundle_id="b2"))
    out.flush()
    assert out.done("b1") == {"a", "b"}  # the error row for b counts: it is b's answer from this bundle
    assert out.done("b2") == {"c"}
    assert out.done("b3") == set()


def test_a_part_left_half_written_is_removed_and_foreign_parts_are_refused(tmp_path):
    (tmp_path / ".part-20260101T000000-deadbeef-00000.parquet.tmp").write_bytes(b"PAR1 half")
    out = Output(str(tmp_path), Storage(), result_schema(CATEGORIES))
    out.prepare()
    assert list(tmp_path.iterdir()) == []
    pq.write_table(_rows(DIMENSIONS, ["a"]), tmp_path / "part-other.parquet")
    with pytest.raises(BatchError, match=r"part-other\.parquet has other columns"):
        out.done("b1")
    (tmp_path / "part-other.parquet").write_bytes(b"not parquet")
    with pytest.raises(BatchError, match=r"part-other\.parquet is not readable Parquet"):
        out.done("b1")


def test_an_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(BatchError, match="is a file"):
        Output(str(tmp_path / "out"), Storage(), result_schema(CATEGORIES)).prepare()
