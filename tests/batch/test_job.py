"""Real batch jobs on Ray: a local Ray started for the job, a three-node cluster, a real S3-compatible server;
bad files among good ones, a model actor killed mid-job, reruns. Each answer is held against
EmotionRecognizer's own for the same file."""

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ser.batch import BatchError, BatchOptions, Output, Progress, Storage, result_schema, score_files
from ser.batch.job import READER_CPUS, plan_actors
from ser.bundle import Bundle, BundleError
from ser.runtime import AudioError, EmotionRecognizer
from tests.batch.conftest import BAD_FILES, upload, write_clips

pytest.importorskip("ray", reason="ser[batch] (Ray) is not installed")


def _rows(output: str, bundle: Bundle, storage: Storage | None = None) -> dict[str, dict]:
    table = Output(output, storage or Storage(), result_schema(bundle.manifest.answer_spec)).read()
    paths = table.column("path").to_pylist()
    repeated = [p for p, n in Counter(paths).items() if n > 1]
    assert not repeated, f"written more than once: {repeated}"
    return {row["path"]: row for row in table.to_pylist()}


def _check_against_recognizer(rows: dict[str, dict], bundle: Bundle, files: dict[str, str]) -> None:
    """Every row equals what EmotionRecognizer answers for the file (`files`: row path → local file)."""
    recognizer = EmotionRecognizer.load(bundle, backend="onnxruntime-cpu", threads=1)
    answer = recognizer.answer
    prefix = "score_" if answer.is_categorical else "dimension_"
    assert set(rows) == set(files)
    for path, local in files.items():
        row = rows[path]
        expected = recognizer.predict_each([local], max_seconds=60)[0]
        if isinstance(expected, AudioError):
            assert row["error"] and row["label"] is None and row["duration_s"] is None, path
            continue
        assert row["error"] is None, row["error"]
        assert (
            row["bundle_id"] == bundle.id and row["label"] == expected.label and row["canonical"] == expected.canonical
        )
        got = np.array([row[prefix + name] for name in answer.names])
        np.testing.assert_allclose(got, [expected.values[n] for n in answer.names], atol=2e-5, err_msg=path)
        assert row["duration_s"] == pytest.approx(expected.duration_s)


def test_progress_reads_as_a_person_would_say_it():
    progress = Progress(total=10, done=4, errors=1, audio_s=7200.0, elapsed_s=2.0)
    assert progress.describe() == "4/10 files · 2.0 files/s · 1.000 audio h/s · 1 errors · 3 s left"
    assert "left" not in Progress(total=10).describe()  # no rate yet: no guess


def test_plan_actors_leaves_a_reader_room_on_every_node_and_refuses_what_cannot_start():
    two_cores = [(2.0, 0.0)]
    assert plan_actors(two_cores, BatchOptions()) == (1, 2 - READER_CPUS)
    assert plan_actors(two_cores, BatchOptions(actors=2)) == (2, 0.87)
    assert plan_actors([(2.0, 0.0)] * 3, BatchOptions()) == (3, 1.75)  # one an idle node each
    assert plan_actors([(2.0, 0.0)] * 3, BatchOptions(actors=2)) == (2, 1.75)  # never more than a node holds
    assert plan_actors([(8.0, 0.0)], BatchOptions(cpus_per_actor=2)) == (3, 2)
    with pytest.raises(BatchError, match=r"3 model actor\(s\) of 1 CPU\(s\) each do not fit.*at most 1"):
        plan_actors(two_cores, BatchOptions(actors=3, cpus_per_actor=1))
    with pytest.raises(BatchError, match="GPU"):
        plan_actors(two_cores, BatchOptions(gpus_per_actor=1))


def test_a_local_job_answers_every_file_as_the_recognizer_does_and_bad_files_as_error_rows(clips, tiny_bundle):
    folder, good, bad = clips
    bundle = Bundle.load(tiny_bundle("wavlm"))
    out = str(folder.parent / "out")
    seen = []
    summary = score_files(str(folder), bundle, out, BatchOptions(batch_size=4, window=8), seen.append, 0.0)
    rows = _rows(out, bundle)
    files = {str(p.absolute()): str(p) for p in good} | {p: p for p in bad}
    _check_against_recognizer(rows, bundle, files)
    for path, reason in bad.items():
        assert reason in rows[path]["error"] and path in rows[path]["error"]
    assert (summary.listed, summary.skipped, summary.scored, summary.errors) == (len(files), 0, len(good), len(bad))
    assert summary.actors == 1 and summary.nodes == 1 and summary.cpus_per_actor == 2 - READER_CPUS
    assert summary.threads_per_actor == 2  # ONNX Runtime on the CPUs Ray assigned (1.75, rounded), not the host's
    assert seen and seen[-1].done == len(files) and seen[-1].errors == len(bad) and seen[-1].audio_s > 0

    # Rerun: nothing to do, nothing written. Then three new files: only they are scored.
    parts = sorted(os.listdir(out))
    again = score_files(str(folder), bundle, out)
    assert (again.skipped, again.scored, again.errors, sorted(os.listdir(out))) == (len(files), 0, 0, parts)
    new = write_clips(folder / "new", 3, seconds=lambda i: 1.0)
    more = score_files(str(folder), bundle, out)
    assert (more.skipped, more.scored, more.errors) == (len(files), 3, 0)
    _check_against_recognizer(_rows(out, bundle), bundle, files | {str(p.absolute()): str(p) for p in new})


def test_a_dimensional_bundle_writes_its_dimensions(tmp_path, dimensional_bundle):
    good = write_clips(tmp_path / "in", 5)
    bundle = Bundle.load(dimensional_bundle)
    score_files(str(tmp_path / "in"), bundle, str(tmp_path / "out"))
    rows = _rows(str(tmp_path / "out"), bundle)
    assert {k for k in next(iter(rows.values())) if k.startswith("dimension_")} == {
        f"dimension_{d}" for d in bundle.manifest.labels
    }
    _check_against_recognizer(rows, bundle, {str(p.absolute()): str(p) for p in good})


def test_a_job_reads_and_writes_s3(clips, s3, tiny_bundle):
    folder, good, bad = clips
    endpoint, client = s3
    upload(client, folder, "in")
    bundle = Bundle.load(tiny_bundle("wavlm"))
    storage = Storage(s3_endpoint=endpoint)
    summary = score_files("s3://calls/in", bundle, "s3://calls/results/run1", BatchOptions(storage=storage))
    rows = _rows("s3://calls/results/run1", bundle, storage)
    local = {f"s3://calls/in/{p.relative_to(folder).as_posix()}": str(p) for p in good}
    local |= {f"s3://calls/in/bad/{Path(p).name}": p for p in bad}
    _check_against_recognizer(rows, bundle, local)
    assert (summary.scored, summary.errors) == (len(good), len(BAD_FILES))
    again = score_files("s3://calls/in", bundle, "s3://calls/results/run1", BatchOptions(storage=storage))
    assert (again.skipped, again.scored) == (len(local), 0)


def test_a_job_on_a_three_node_cluster_puts_actors_on_more_than_one_node(tmp_path, tiny_bundle):
    from ray.cluster_utils import Cluster

    good = write_clips(tmp_path / "in", 48, seconds=lambda i: 2.0)
    bundle = Bundle.load(tiny_bundle("wavlm"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        summary = score_files(
            str(tmp_path / "in"), bundle, str(tmp_path / "out"), BatchOptions(address=cluster.address, window=4)
        )
    finally:
        cluster.shutdown()
    assert (summary.actors, summary.cpus_per_actor, summary.threads_per_actor) == (3, 1.75, 2)
    assert summary.nodes >= 2, summary
    _check_against_recognizer(_rows(str(tmp_path / "out"), bundle), bundle, {str(p.absolute()): str(p) for p in good})


def test_a_model_actor_killed_mid_job_loses_nothing_and_writes_nothing_twice(tmp_path, tiny_bundle):
    good = write_clips(tmp_path / "in", 240, seconds=lambda i: 3.0)
    bundle = Bundle.load(tiny_bundle("wavlm"))
    out = tmp_path / "out"
    killed: list[tuple[int, int]] = []  # (pid, parts written when it was killed)

    def kill_an_actor_once_a_part_is_written() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            parts = len(list(out.glob("part-*"))) if out.exists() else 0
            if parts:
                for pid in _actor_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append((pid, parts))
            time.sleep(0.02)

    killer = threading.Thread(target=kill_an_actor_once_a_part_is_written, daemon=True)
    killer.start()
    summary = score_files(str(tmp_path / "in"), bundle, str(out), BatchOptions(window=4, part_rows=4))
    killer.join()
    assert killed, "no model actor was found to kill"
    assert killed[0][1] * 4 < len(good)  # it died with files still to do
    assert (summary.scored, summary.errors) == (len(good), 0)
    _check_against_recognizer(_rows(str(out), bundle), bundle, {str(p.absolute()): str(p) for p in good})


def _actor_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker(MapBatches(Scorer))" in command:
                pids.append(int(entry))
    return pids


def test_a_bundle_that_does_not_verify_stops_the_job_before_any_work(tmp_path, tiny_bundle):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle("wavlm"), copy)
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    write_clips(tmp_path / "in", 2)
    with pytest.raises(BundleError, match="does not match its sha256"):
        score_files(str(tmp_path / "in"), copy, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_model_actors_that_cannot_start_stop_the_job_with_the_reason(tmp_path, tiny_bundle):
    from ser.runtime.tensorrt import unavailable_reason

    if unavailable_reason() is None:
        pytest.skip("TensorRT is installed here: the tensorrt backend would start")
    write_clips(tmp_path / "in", 2)
    with pytest.raises(BatchError, match=r"the job stopped: .*TensorRT is not installed"):
        score_files(str(tmp_path / "in"), tiny_bundle("wavlm"), str(tmp_path / "out"), BatchOptions(backend="tensorrt"))
