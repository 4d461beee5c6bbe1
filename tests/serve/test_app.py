"""The service over real HTTP on loopback, with the tiny wavlm bundle and real audio files."""

import asyncio
import re

import httpx
import numpy as np
import pytest

from ser.runtime import EmotionRecognizer
from ser.runtime.recognizer import window_bounds


def _metric(text: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + selector + '}') if labels else ''} (\S+)$"
    matches = re.findall(pattern, text, flags=re.MULTILINE)
    return float(matches[0]) if matches else 0.0


def test_predict_raw_and_multipart_match_the_runtime(service, tiny_bundle, write_clip):
    clip = write_clip("a.flac", seconds=1.5, rate=44_100)
    with EmotionRecognizer.load(tiny_bundle("wavlm")) as recognizer:
        expected = recognizer.predict(clip)
    with service() as client:
        raw = client.post("/v1/predict", content=clip.read_bytes(), headers={"content-type": "audio/flac"})
        form = client.post("/v1/predict", files={"file": ("a.flac", clip.read_bytes(), "audio/flac")})
    for response in (raw, form):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["label"] == expected.label
        assert body["scores"] == pytest.approx(expected.scores, abs=1e-5)
        assert body["duration_s"] == pytest.approx(1.5, abs=1e-3)


def test_timeline_windows_and_overall_label(service, tiny_bundle, write_clip):
    clip = write_clip("long.wav", seconds=5.3)
    with EmotionRecognizer.load(tiny_bundle("wavlm")) as recognizer:
        expected = recognizer.timeline(clip, window_s=2.0, hop_s=1.5)
    with service() as client:
        response = client.post(
            "/v1/timeline", params={"window_s": 2.0, "hop_s": 1.5}, files={"file": ("long.wav", clip.read_bytes())}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    spans = [(w["start_s"], w["end_s"]) for w in body["windows"]]
    assert spans == [(0.0, 2.0), (1.5, 3.5), (3.0, 5.0), (3.3, 5.3)]  # the last window ends at the end
    assert spans == [(w.start_s, w.end_s) for w in expected.windows]
    assert [w["label"] for w in body["windows"]] == [w.label for w in expected.windows]
    assert body["label"] == expected.label and body["scores"] == pytest.approx(expected.scores, abs=1e-5)


def test_health_readiness_metrics_and_openapi(service, write_clip):
    clip = write_clip("a.wav", seconds=1.0).read_bytes()
    with service() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready", "model": "wavlm", "warnings": []}
        for _ in range(3):
            client.post("/v1/predict", content=clip, headers={"content-type": "audio/wav"})
        client.post("/v1/predict", content=b"junk", headers={"content-type": "audio/wav"})
        for path in ("/no/such/path", "/another/one"):
            assert client.get(path).status_code == 404
        metrics = client.get("/metrics")
        schema = client.get("/openapi.json").json()
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert _metric(text, "ser_requests_total", endpoint="/v1/predict", status="200") == 3
    assert _metric(text, "ser_requests_total", endpoint="/v1/predict", status="422") == 1
    assert _metric(text, "ser_request_errors_total", endpoint="/v1/predict") == 1
    assert _metric(text, "ser_request_latency_seconds_count", endpoint="/v1/predict") == 4
    assert _metric(text, "ser_requests_total", endpoint="other", status="404") == 2  # no label per unknown path
    assert _metric(text, "ser_batch_size_count") == 3  # one model call per good clip, sent one after another
    assert {"/v1/predict", "/v1/timeline", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]


@pytest.mark.parametrize(
    ("request_args", "status", "message"),
    [
        (dict(content=b"RIFF junk", headers={"content-type": "audio/wav"}), 422, "not readable audio"),
        (dict(content=b"", headers={"content-type": "audio/wav"}), 422, "empty"),
        (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "text/plain"),
        (dict(files={"other": ("a.wav", b"x")}), 422, "field named 'file'"),
        (dict(content=b"x" * 5000, headers={"content-type": "audio/wav"}), 413, "over the limit of 4000 bytes"),
    ],
)
def test_bad_requests_get_clear_json_errors_and_the_service_stays_up(
    service, write_clip, request_args, status, message
):
    good = write_clip("a.wav", seconds=0.1).read_bytes()  # 3,244 bytes: under the limit set below
    with service(max_upload_mb=4000 / 2**20) as client:
        bad = client.post("/v1/predict", **request_args)
        after = client.post("/v1/predict", content=good, headers={"content-type": "audio/wav"})
    assert bad.status_code == status, bad.text
    assert bad.json()["error"]["status"] == status and message in bad.json()["error"]["message"]
    assert after.status_code == 200, after.text


def test_duration_limits_and_parameters(service, write_clip):
    clip = write_clip("a.wav", seconds=3.0).read_bytes()
    with service(max_seconds=2.0, max_timeline_seconds=2.5) as client:
        too_long = client.post("/v1/predict", content=clip, headers={"content-type": "audio/wav"})
        timeline_too_long = client.post("/v1/timeline", content=clip, headers={"content-type": "audio/wav"})
        hop = client.post("/v1/timeline", params={"window_s": 1, "hop_s": 2}, content=clip[:8000],
                          headers={"content-type": "audio/wav"})  # fmt: skip
        not_a_number = client.post("/v1/timeline", params={"window_s": "abc"}, content=clip,
                                   headers={"content-type": "audio/wav"})  # fmt: skip
    assert too_long.status_code == 422 and "over the limit of 2 s" in too_long.json()["error"]["message"]
    assert timeline_too_long.status_code == 422
    assert hop.status_code == 422 and "hop_s" in hop.json()["error"]["message"]
    assert not_a_number.status_code == 422 and "window_s" in not_a_number.json()["error"]["message"]


def test_timeout_is_a_504(service, write_clip):
    clip = write_clip("a.wav", seconds=1.0).read_bytes()
    with service(timeout_s=1e-6) as client:
        response = client.post("/v1/predict", content=clip, headers={"content-type": "audio/wav"})
        assert response.status_code == 504 and "no answer within" in response.json()["error"]["message"]
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("instances", [1, 2])  # 2: each instance in its own process, decoding there
def test_concurrent_good_and_bad_requests_are_batched_and_answered_individually(
    service, tiny_bundle, write_clip, instances
):
    clips = [write_clip(f"{i}.wav", seconds=0.5 + 0.1 * i, seed=i) for i in range(12)]
    with EmotionRecognizer.load(tiny_bundle("wavlm")) as recognizer:
        expected = [recognizer.predict(c) for c in clips]
    bodies = [c.read_bytes() for c in clips]
    bad = [b"junk", b"RIFF\x00\x00", bodies[0][:60]]  # not audio, a stub, a cut-off header

    async def load(base_url: str):
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            requests = [client.post("/v1/predict", content=b, headers={"content-type": "audio/wav"}) for b in bodies]
            requests += [client.post("/v1/predict", content=b, headers={"content-type": "audio/wav"}) for b in bad]
            return await asyncio.gather(*requests)

    with service(max_batch=8, max_wait_ms=50, instances=instances) as client:
        responses = asyncio.run(load(str(client.base_url)))
        metrics = client.get("/metrics").text
    good, failed = responses[: len(bodies)], responses[len(bodies) :]
    for response, answer in zip(good, expected, strict=True):
        assert response.status_code == 200, response.text
        assert response.json()["scores"] == pytest.approx(answer.scores, abs=1e-5)
    assert [r.status_code for r in failed] == [422, 422, 422]
    batches = _metric(metrics, "ser_batch_size_count")
    assert _metric(metrics, "ser_batch_size_sum") == len(bodies)  # bad files never reach the model
    assert 2 <= batches < len(bodies)  # grouped, and no batch above max_batch 8
    assert _metric(metrics, "ser_batch_size_bucket", le="8.0") == batches


def test_window_bounds():
    rate = 16_000
    assert window_bounds(rate, 2.0, 1.0) == [(0, rate)]  # shorter than a window: one window
    assert window_bounds(5 * rate, 2.0, 1.0) == [
        (0, 2 * rate),
        (rate, 3 * rate),
        (2 * rate, 4 * rate),
        (3 * rate, 5 * rate),
    ]
    assert window_bounds(4 * rate, 2.0, 2.0) == [(0, 2 * rate), (2 * rate, 4 * rate)]
    with pytest.raises(ValueError, match="hop"):
        window_bounds(rate, 1.0, 2.0)
    with pytest.raises(ValueError, match="window must be at least"):
        window_bounds(rate, 0.01, 0.01)
    assert np.diff([a for a, _ in window_bounds(10 * rate, 2.0, 0.5)]).max() == rate // 2


def test_a_long_timeline_fits_a_small_queue(service, write_clip):
    clip = write_clip("long.wav", seconds=6.0).read_bytes()
    with service(max_batch=2, max_queue=2) as client:
        response = client.post("/v1/timeline", params={"window_s": 1.0, "hop_s": 0.5}, content=clip,
                               headers={"content-type": "audio/wav"})  # fmt: skip
    assert response.status_code == 200, response.text
    assert len(response.json()["windows"]) == 11  # more windows than the queue holds, sent a batch at a time


def test_hostile_audio_is_refused_from_its_header_and_never_answered_with_nan(service, write_clip):
    from tests.hostile import flac_claiming_frames, float_wav, wav_claiming_rate

    wav = {"content-type": "audio/wav"}
    with service() as client:
        one_hertz = client.post("/v1/predict", content=wav_claiming_rate(1), headers=wav)
        huge = client.post("/v1/predict", content=flac_claiming_frames((1 << 36) - 1), headers=wav)
        overflow = client.post("/v1/predict", content=float_wav(3.4e38), headers=wav)
        timeline_overflow = client.post("/v1/timeline", content=float_wav(3.4e38, seconds=3.0), headers=wav)
        after = client.post("/v1/predict", content=write_clip("a.wav").read_bytes(), headers=wav)
    assert one_hertz.status_code == 422 and "outside 4000-384000 Hz" in one_hertz.json()["error"]["message"]
    assert huge.status_code == 422 and "over the limit of 60 s" in huge.json()["error"]["message"]
    for response in (overflow, timeline_overflow):
        assert response.status_code == 422, response.text
        assert "not finite" in response.json()["error"]["message"]
    assert after.status_code == 200


def test_timeline_parameters_and_window_count_are_bounded(service, write_clip):
    clip = write_clip("ten.wav", seconds=10.0).read_bytes()
    wav = {"content-type": "audio/wav"}
    with service(max_timeline_windows=500) as client:
        many = client.post("/v1/timeline", params={"window_s": 0.1, "hop_s": 0.0001}, content=clip, headers=wav)
        tiny_hop = client.post("/v1/timeline", params={"window_s": 0.1, "hop_s": 0.00001}, content=clip, headers=wav)
        nan = client.post("/v1/timeline", params={"window_s": "nan"}, content=clip, headers=wav)
        inf = client.post("/v1/timeline", params={"hop_s": "inf"}, content=clip, headers=wav)
    assert many.status_code == 422 and "makes 79201 windows, over the limit of 500" in many.json()["error"]["message"]
    assert tiny_hop.status_code == 422 and "one sample" in tiny_hop.json()["error"]["message"]
    for response in (nan, inf):
        assert response.status_code == 422 and "finite number" in response.json()["error"]["message"], response.text


def test_multipart_errors_have_the_json_error_form(service):
    boundary = "x" * 10
    body = f"--{boundary}\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--{boundary}--\r\n".encode()
    with service() as client:
        response = client.post(
            "/v1/predict", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
        unknown = client.get("/v2/nothing")
    assert response.status_code == 400 and response.json()["error"]["status"] == 400, response.text
    assert unknown.status_code == 404 and unknown.json()["error"]["message"] == "Not Found"


def test_idle_and_slow_connections_are_closed_and_a_slow_body_gets_408(service, write_clip):
    import socket
    import time

    clip = write_clip("a.wav", seconds=0.5).read_bytes()
    with service(keep_alive_s=0.5, body_timeout_s=0.5) as client:
        port = client.base_url.port
        idle = socket.create_connection(("127.0.0.1", port))  # never sends a byte
        slow_head = socket.create_connection(("127.0.0.1", port))
        slow_head.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")  # and never finishes its head
        for conn in (idle, slow_head):
            conn.settimeout(5)
        started = time.monotonic()
        assert idle.recv(1) == b"" and slow_head.recv(1) == b""  # closed by the server
        assert time.monotonic() - started < 4

        slow_body = socket.create_connection(("127.0.0.1", port))
        slow_body.settimeout(5)
        head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: {len(clip)}\r\n\r\n"
        slow_body.sendall(head.encode() + clip[:100])  # the rest never comes
        answer = b""
        while b"did not arrive" not in answer and (chunk := slow_body.recv(4096)):
            answer += chunk
        answer = answer.decode()
        assert answer.startswith("HTTP/1.1 408") and "did not arrive within 0.5 s" in answer
        for conn in (idle, slow_head, slow_body):
            conn.close()
        assert client.get("/healthz").status_code == 200


def test_a_client_that_disconnects_is_logged_as_such_not_as_a_500(service, write_clip, caplog):
    import logging
    import socket
    import time

    clip = write_clip("a.wav", seconds=0.5).read_bytes()
    caplog.set_level(logging.INFO, logger="ser.serve")
    with service() as client:
        gone = socket.create_connection(("127.0.0.1", client.base_url.port))
        head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: {len(clip)}\r\n\r\n"
        gone.sendall(head.encode() + clip[:100])
        time.sleep(0.3)
        gone.close()
        deadline = time.monotonic() + 10
        while "disconnected" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        metrics = client.get("/metrics").text
    assert "the client disconnected before its request was read" in caplog.text
    assert "unexpected error" not in caplog.text and "Traceback" not in caplog.text
    assert 'status="499"' in metrics and 'status="500"' not in metrics


def test_a_dimensional_bundle_answers_dimensions_on_predict_and_timeline(dimensional_bundle, write_clip):
    from ser.serve import ServeSettings
    from tests.serve.conftest import running_service

    clip = write_clip("a.wav", seconds=3.5)
    with EmotionRecognizer.load(dimensional_bundle, backend="onnxruntime-cpu") as recognizer:
        expected = recognizer.predict(clip)
        timeline = recognizer.timeline(clip, window_s=1.0, hop_s=0.5)
    with running_service(ServeSettings(bundle=str(dimensional_bundle), threads=1)) as client:
        answer = client.post("/v1/predict", files={"file": clip.read_bytes()})
        windows = client.post("/v1/timeline?window_s=1&hop_s=0.5", files={"file": clip.read_bytes()})
        schema = client.get("/openapi.json").json()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"dimensions", "duration_s", "embedding"}
    assert body["dimensions"] == pytest.approx(expected.dimensions, abs=1e-5)
    assert windows.status_code == 200, windows.text
    body = windows.json()
    assert body["dimensions"] == pytest.approx(timeline.dimensions, abs=1e-5)
    weights = np.array([w["end_s"] - w["start_s"] for w in body["windows"]])
    for name in ("arousal", "dominance", "valence"):  # the overall answer: the duration-weighted mean
        values = np.array([w["dimensions"][name] for w in body["windows"]])
        assert body["dimensions"][name] == pytest.approx((values * weights).sum() / weights.sum(), abs=1e-6)
    assert "dimensions" in schema["components"]["schemas"]["PredictResponse"]["properties"]


def test_a_whisper_bundle_answers_predict_and_timeline_as_the_runtime(tiny_bundle, write_clip):
    """A clip over Whisper's 30 s window is answered for its first 30 s, as transformers answers it."""
    from ser.serve import ServeSettings
    from tests.serve.conftest import running_service

    bundle = tiny_bundle("whisper")
    short, long = write_clip("a.wav", seconds=3.0), write_clip("b.wav", seconds=32.0, seed=1)
    with EmotionRecognizer.load(bundle, backend="onnxruntime-cpu") as recognizer:
        expected = [recognizer.predict(short), recognizer.predict(long)]
        timeline = recognizer.timeline(short, window_s=2.0, hop_s=1.0)
    with running_service(ServeSettings(bundle=str(bundle), threads=1)) as client:
        answers = [client.post("/v1/predict", files={"file": clip.read_bytes()}) for clip in (short, long)]
        windows = client.post("/v1/timeline?window_s=2&hop_s=1", files={"file": short.read_bytes()})
    for answer, prediction in zip(answers, expected, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json()["label"] == prediction.label
        assert answer.json()["scores"] == pytest.approx(prediction.scores, abs=1e-5)
    assert answers[1].json()["duration_s"] == pytest.approx(32.0)
    assert windows.status_code == 200, windows.text
    assert windows.json()["scores"] == pytest.approx(timeline.scores, abs=1e-5)


def test_small_and_large_uploads_answer_alike_wherever_they_are_decoded(service, tiny_bundle, write_clip, monkeypatch):
    # A body within BATCH_THREAD_DECODE_BYTES is decoded on the batch's thread; a larger one in the thread
    # pool. Both must answer as the runtime does, and a bad body of either size is its own 422.
    from ser.serve import app as app_module

    small = write_clip("small.wav", seconds=1.0)
    large = write_clip("large.wav", seconds=12.0, rate=44_100, channels=2)
    assert small.stat().st_size <= app_module.BATCH_THREAD_DECODE_BYTES < large.stat().st_size
    with EmotionRecognizer.load(tiny_bundle("wavlm")) as recognizer:
        expected = {clip.name: recognizer.predict(clip) for clip in (small, large)}
    decoded_on = []
    real_load = app_module.load_audio

    def recording_load(*args, **kwargs):
        import threading

        decoded_on.append(threading.current_thread().name)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(app_module, "load_audio", recording_load)
    with service() as client:
        for clip in (small, large):
            answer = client.post("/v1/predict", content=clip.read_bytes(), headers={"content-type": "audio/wav"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["scores"] == pytest.approx(expected[clip.name].scores, abs=1e-5)
        for junk in (b"RIFF junk", b"RIFF" + b"\x00" * 300_000):
            bad = client.post("/v1/predict", content=junk, headers={"content-type": "audio/wav"})
            assert bad.status_code == 422 and "not readable audio" in bad.json()["error"]["message"]
        assert client.get("/healthz").status_code == 200
    assert decoded_on[0].startswith("ser-batch") and not decoded_on[1].startswith("ser-batch"), decoded_on
