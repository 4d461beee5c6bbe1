"""Model instances in their own processes: real child processes running the tiny wavlm bundle, compared with
the runtime in this process, and killed for real."""

import multiprocessing
import os
import shutil
import signal
import time
from functools import partial

import numpy as np
import pytest

from ser.audio import AudioError, load_audio
from ser.bundle import BundleError
from ser.runtime import EmotionRecognizer
from ser.serve import ServeSettings
from ser.serve.instances import InstanceDied, ProcessInstance
from tests.serve.conftest import running_service

WARMUP = [np.zeros(8000, dtype=np.float32)]


def _children() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("model instance")]


def test_a_process_instance_answers_as_the_runtime_does_and_fails_only_the_bad_clip(tiny_bundle, write_clip):
    bundle = tiny_bundle("wavlm")
    wav = write_clip("a.wav", seconds=1.2).read_bytes()
    samples = np.random.default_rng(0).standard_normal(20_000).astype(np.float32) * 0.1
    with EmotionRecognizer.load(bundle, threads=1) as recognizer:
        expected = recognizer.classify([samples, load_audio(wav, name="a.wav")])
    (instance,) = ProcessInstance.start_all(1, bundle, "auto", 1, False, WARMUP)
    try:
        clips = [
            samples,
            partial(load_audio, wav, name="a.wav"),  # decoded in the child
            partial(load_audio, b"RIFF not audio", name="bad.wav"),
        ]
        outcomes, calls = instance.answer_clips(clips)
    finally:
        instance.close()
    for (result, error), want in zip(outcomes[:2], expected, strict=True):
        assert error is None
        assert result.label == want.label
        assert result.scores == pytest.approx(want.scores, abs=1e-6)
    result, error = outcomes[2]
    assert result is None and isinstance(error, AudioError) and "bad.wav" in str(error)
    assert [size for size, _ in calls] == [2]  # one model call for the two good clips


def test_a_bundle_the_child_refuses_is_refused_at_start(tmp_path, tiny_bundle):
    broken = shutil.copytree(tiny_bundle("wavlm"), tmp_path / "broken")
    (broken / "manifest.json").write_text("{")
    with pytest.raises(BundleError, match="manifest"):
        ProcessInstance.start_all(2, broken, "auto", 1, False, WARMUP)
    deadline = time.monotonic() + 10
    while _children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _children()  # every child stopped


def test_a_killed_instance_fails_its_batch_with_503_then_answers_again(service, write_clip):
    wav = write_clip("a.wav", seconds=1.0).read_bytes()
    headers = {"content-type": "audio/wav"}
    with service(instances=2) as client:
        assert client.post("/v1/predict", content=wav, headers=headers).status_code == 200
        (victim, *_) = _children()
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=10)
        statuses = [client.post("/v1/predict", content=wav, headers=headers) for _ in range(12)]
        failed = [r for r in statuses if r.status_code != 200]
        # The batch sent to the dead child (if any reached it) is a 503 naming it; every other request answers.
        assert all(r.status_code == 503 and "exited" in r.json()["error"]["message"] for r in failed)
        assert len(failed) <= 1
        deadline = time.monotonic() + 60
        while len([p for p in _children() if p.is_alive()]) < 2 and time.monotonic() < deadline:
            client.post("/v1/predict", content=wav, headers=headers)
            time.sleep(0.1)
        assert len([p for p in _children() if p.is_alive()]) == 2  # started again
        assert all(client.post("/v1/predict", content=wav, headers=headers).status_code == 200 for _ in range(6))
        assert client.get("/readyz").status_code == 200


def test_instances_that_cannot_start_again_leave_the_service_not_ready_and_refusing_once_none_is_left(
    tmp_path, tiny_bundle, write_clip
):
    bundle = shutil.copytree(tiny_bundle("wavlm"), tmp_path / "wavlm")
    wav = write_clip("a.wav", seconds=1.0).read_bytes()
    headers = {"content-type": "audio/wav"}
    with running_service(ServeSettings(bundle=str(bundle), threads=1, instances=2)) as client:
        shutil.rmtree(bundle)  # a restart can no longer load it
        (victim, *_) = _children()
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=10)
        statuses = [client.post("/v1/predict", content=wav, headers=headers).status_code for _ in range(12)]
        assert statuses.count(503) == 1 and statuses.count(200) == 11  # the dead one's batch; the other answers
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/readyz").status_code == 503
        assert client.post("/v1/predict", content=wav, headers=headers).status_code == 200
        (last,) = _children()  # and the last one too: every request is then refused at once, not left to time out
        os.kill(last.pid, signal.SIGKILL)
        last.join(timeout=10)
        assert client.post("/v1/predict", content=wav, headers=headers).status_code == 503  # its batch
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            refused = client.post("/v1/predict", content=wav, headers=headers)
            if "no model instance is running" in refused.text:
                break
            time.sleep(0.1)
        assert refused.status_code == 503 and "no model instance is running" in refused.json()["error"]["message"]
        assert client.get("/healthz").status_code == 200


def test_instance_died_is_raised_for_a_dead_child(tiny_bundle):
    (instance,) = ProcessInstance.start_all(1, tiny_bundle("wavlm"), "auto", 1, False, WARMUP)
    try:
        os.kill(instance._process.pid, signal.SIGKILL)
        instance._process.join(timeout=10)
        assert not instance.alive
        with pytest.raises(InstanceDied, match="exited"):
            instance.answer_clips([WARMUP[0]])
        assert instance.restart() and instance.alive
        outcomes, _ = instance.answer_clips([WARMUP[0]])
        assert outcomes[0][1] is None
    finally:
        instance.close()


def test_a_hung_child_is_stopped_after_hang_s_and_started_again(tiny_bundle):
    (instance,) = ProcessInstance.start_all(1, tiny_bundle("wavlm"), "auto", 1, False, WARMUP, hang_s=1.0)
    try:
        hung = instance._process.pid
        os.kill(hung, signal.SIGSTOP)  # alive, but answers nothing
        started = time.monotonic()
        with pytest.raises(InstanceDied, match="did not answer within 1 s"):
            instance.answer_clips([WARMUP[0]])
        assert 1.0 <= time.monotonic() - started < 15
        assert not instance.alive
        assert instance.restart() and instance._process.pid != hung
        outcomes, _ = instance.answer_clips([WARMUP[0]])
        assert outcomes[0][1] is None
    finally:
        instance.close()


def test_a_hung_instance_costs_its_batch_a_504_and_is_replaced_while_the_other_answers(service, write_clip):
    wav = write_clip("a.wav", seconds=1.0).read_bytes()
    headers = {"content-type": "audio/wav"}
    with service(instances=2, timeout_s=1.0) as client:  # a batch unanswered for 10 s (HUNG_AFTER_S): hung
        assert client.post("/v1/predict", content=wav, headers=headers).status_code == 200
        (victim, *_) = _children()
        hung = victim.pid
        os.kill(hung, signal.SIGSTOP)
        statuses = [client.post("/v1/predict", content=wav, headers=headers).status_code for _ in range(8)]
        assert statuses.count(504) <= 1 and statuses.count(200) == len(statuses) - statuses.count(504)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            alive = [p.pid for p in _children() if p.is_alive()]
            if len(alive) == 2 and hung not in alive:
                break
            client.post("/v1/predict", content=wav, headers=headers)
            time.sleep(0.1)
        assert len(alive) == 2 and hung not in alive  # killed, and a new child in its place
        assert all(client.post("/v1/predict", content=wav, headers=headers).status_code == 200 for _ in range(6))
        assert client.get("/readyz").status_code == 200
