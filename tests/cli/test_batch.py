"""`ser-batch` as a user runs it: JSON summary and exit codes, and a job killed or interrupted, then rerun."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.batch.conftest import write_bad_files, write_clips

pytest.importorskip("ray", reason="ser[batch] (Ray) is not installed")
SCRIPTS = Path(sys.executable).parent


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPTS / "ser-batch", *map(str, args)], capture_output=True, text=True, timeout=300)


def _paths(out: Path) -> Counter:
    return Counter(p for part in sorted(out.glob("part-*.parquet")) for p in pq.read_table(part)["path"].to_pylist())


def test_json_summary_error_rows_and_exit_status(tmp_path, tiny_bundle):
    good = write_clips(tmp_path / "in", 6)
    bad = write_bad_files(tmp_path / "in" / "bad")
    result = _run(tiny_bundle("resnet18"), tmp_path / "in", "--out", tmp_path / "out", "--json", "--actors", "2")
    assert result.returncode == 1, result.stderr  # some files failed; the job went on
    events = [json.loads(line) for line in result.stdout.splitlines()]
    summary = events[-1]
    assert summary["event"] == "summary" and all(e["event"] == "progress" for e in events[:-1])
    assert (summary["scored"], summary["errors"], summary["actors"]) == (len(good), len(bad), 2)
    assert (summary["cpus_per_actor"], summary["threads_per_actor"]) == (0.87, 1)  # two actors share two cores
    assert summary["files_per_s"] > 0 and summary["first_rows_s"] > 0
    again = _run(tiny_bundle("resnet18"), tmp_path / "in", "--out", tmp_path / "out")
    assert again.returncode == 0 and again.stdout.startswith("nothing to do: all 13 files"), again.stdout


def test_an_unusable_bundle_or_source_exits_2_before_any_work(tmp_path, tiny_bundle):
    write_clips(tmp_path / "in", 2)
    tampered = tmp_path / "bundle"
    shutil.copytree(tiny_bundle("wavlm"), tampered)
    with open(tampered / "model.onnx", "ab") as f:
        f.write(b"\0")
    result = _run(tampered, tmp_path / "in", "--out", tmp_path / "out")
    assert result.returncode == 2 and "model.onnx does not match its sha256" in result.stderr, result.stderr
    missing = _run(tiny_bundle("wavlm"), tmp_path / "nowhere", "--out", tmp_path / "out")
    assert missing.returncode == 2 and "nowhere: no such file or folder" in missing.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGINT])
def test_a_job_stopped_mid_way_resumes_and_answers_every_file_exactly_once(tmp_path, tiny_bundle, signal_number):
    good = write_clips(tmp_path / "in", 320, seconds=lambda i: 3.0)
    out = tmp_path / "out"
    command = [SCRIPTS / "ser-batch", tiny_bundle("wavlm"), tmp_path / "in", "--out", out, "--part-rows", "1"]
    # A shell's background job (`make test &`) starts with SIGINT ignored, and a child inherits that: give it back.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal_number)
        _stdout, stderr = process.communicate(timeout=120)
    finally:
        _end_session(process.pid)
    written = _paths(out)
    assert 0 < sum(written.values()) < len(good) and max(written.values()) == 1
    if signal_number == signal.SIGINT:
        assert process.returncode == 130 and "run the same command again to finish" in stderr, stderr
    resumed = _run(*command[1:], "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.splitlines()[-1])
    assert summary["skipped"] == sum(written.values()) and summary["scored"] == len(good) - summary["skipped"]
    assert _paths(out) == Counter(str(p.absolute()) for p in good)  # every file, exactly once
    assert not [p for p in out.iterdir() if not p.name.startswith("part-")]  # no half-written part left


def _end_session(pid: int) -> None:
    """Whatever the killed job left running (Ray's own processes share its session) is ended."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
