"""The HTTP protocol ser-serve runs (uvicorn's httptools with head deadlines and a head size limit, and the
infer route answered without ASGI), over real sockets against the real service."""

import json
import socket
import struct

from ser.serve.protocol import MAX_HEAD_BYTES


def _read_all(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while chunk := conn.recv(65536):
        answer += chunk
    return answer


def _responses(data: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each HTTP/1.1 response in `data` (bodies with a content-length)."""
    found = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
        found.append((int(lines[0].split()[1]), rest[:length]))
        data = rest[length:]
    return found


def test_a_request_head_over_the_limit_gets_431_and_the_service_stays_up(service):
    with service() as client:
        port = client.base_url.port
        # Headers that never end, sent in pieces: refused once they pass the limit, not buffered on.
        endless = socket.create_connection(("127.0.0.1", port))
        endless.settimeout(10)
        endless.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(4 * MAX_HEAD_BYTES // 1024):
                endless.sendall(b"X-Pad: " + b"a" * 1014 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server mid-send, as it should be
        answer = _read_all(endless)
        assert answer.startswith(b"HTTP/1.1 431") and f"over {MAX_HEAD_BYTES} bytes".encode() in answer
        # One huge header line in a single send.
        huge = socket.create_connection(("127.0.0.1", port))
        huge.settimeout(10)
        huge.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * (2 * MAX_HEAD_BYTES) + b"\r\n\r\n")
        assert _read_all(huge).startswith(b"HTTP/1.1 431")
        assert client.get("/healthz").status_code == 200


def test_bodies_larger_than_the_head_limit_and_pipelined_requests_are_answered(service, write_clip):
    clip = write_clip("a.wav", seconds=3.0).read_bytes()
    assert len(clip) > 4 * MAX_HEAD_BYTES  # arrives in the same reads as its head
    head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: {len(clip)}\r\n"
    with service(keep_alive_s=0.002) as client:
        conn = socket.create_connection(("127.0.0.1", client.base_url.port))
        conn.settimeout(30)
        # Three requests in one send on one connection; the last asks to close afterwards. Each is answered,
        # though answering the next one outlasts the head deadline armed as each response went out.
        conn.sendall(2 * (head.encode() + b"\r\n" + clip) + head.encode() + b"Connection: close\r\n\r\n" + clip)
        answers = _responses(_read_all(conn))
        direct = client.post("/v1/predict", content=clip, headers={"content-type": "audio/wav"}).json()
    assert [status for status, _ in answers] == [200, 200, 200]
    assert all(json.loads(body)["label"] == direct["label"] for _, body in answers)


def _infer_request(wav: bytes, extra_headers: str = "", http: str = "1.1") -> bytes:
    """POST /v2/models/wavlm/infer with `wav` as AUDIO_FILE in the binary tensor extension, as one message."""
    element = struct.pack("<I", len(wav)) + wav
    header = json.dumps({"inputs": [{"name": "AUDIO_FILE", "shape": [1, 1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(element)}}]}).encode()  # fmt: skip
    head = (f"POST /v2/models/wavlm/infer HTTP/{http}\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Inference-Header-Content-Length: {len(header)}\r\nContent-Length: {len(header) + len(element)}\r\n"
            f"{extra_headers}\r\n")  # fmt: skip
    return head.encode() + header + element


def _labels(answers: list[tuple[int, bytes]]) -> list[str]:
    return [json.loads(body)["outputs"][0]["data"][0] for _, body in answers]


def test_infer_answers_alike_through_the_protocol_and_through_asgi(service, tiny_bundle, write_clip):
    """ser-serve's protocol answers the infer route itself; ASGI servers (and TestClient) go through InferRoute:
    the same requests get the same bytes either way, errors included."""
    from fastapi.testclient import TestClient

    from ser.serve import ServeSettings, create_app

    wav = write_clip("a.wav", seconds=1.0).read_bytes()
    good = _infer_request(wav)
    header_length = good.split(b"Inference-Header-Content-Length: ")[1].split(b"\r\n")[0].decode()
    body = good.partition(b"\r\n\r\n")[2]
    requests = [
        ("/v2/models/wavlm/infer", body, {"inference-header-content-length": header_length}),
        ("/v2/models/wavlm/infer", b"{not json", {}),
        ("/v2/models/hubert/infer", body, {"inference-header-content-length": header_length}),
        ("/v2/models/wavlm/infer", body[:-10], {"inference-header-content-length": header_length}),
    ]
    with service() as client:
        served = [client.post(path, content=content, headers=headers) for path, content, headers in requests]
        metrics = client.get("/metrics").text
    settings = ServeSettings(bundle=str(tiny_bundle("wavlm")), threads=1)
    with TestClient(create_app(settings)) as asgi:
        through_asgi = [asgi.post(path, content=content, headers=headers) for path, content, headers in requests]
    assert [r.status_code for r in served] == [200, 400, 404, 400]
    assert [(r.status_code, r.content) for r in served] == [(r.status_code, r.content) for r in through_asgi]
    assert all(r.headers["content-type"] == "application/json" for r in served)
    assert 'ser_requests_total{endpoint="/v2/models/{name}/infer",status="400"} 2.0' in metrics


def test_an_infer_body_over_the_limit_or_late_is_refused_and_the_connection_closed(service, write_clip):
    wav = write_clip("a.wav", seconds=2.0).read_bytes()
    with service(max_upload_mb=0.05, body_timeout_s=0.5) as client:  # a 2 s WAV is 64 KB: over 0.05 MiB
        port = client.base_url.port
        # A declared length over the limit: refused from the head, before a byte of the body is sent.
        declared = socket.create_connection(("127.0.0.1", port))
        declared.settimeout(10)
        declared.sendall(_infer_request(wav).partition(b"\r\n\r\n")[0] + b"\r\n\r\n")
        refused = _read_all(declared)
        (status, answer), *_ = _responses(refused)
        # A chunked body with no length, refused once it passes the limit.
        chunked = socket.create_connection(("127.0.0.1", port))
        chunked.settimeout(10)
        chunked.sendall(b"POST /v2/models/wavlm/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(100):
                chunked.sendall(b"4000\r\n" + b"\0" * 0x4000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server mid-send, as it should be
        (chunked_status, chunked_answer), *_ = _responses(_read_all(chunked))
    with service(body_timeout_s=0.5) as client:
        late = socket.create_connection(("127.0.0.1", client.base_url.port))
        late.settimeout(10)
        late.sendall(_infer_request(wav)[:-1000])  # the rest never comes
        (late_status, late_answer), *_ = _responses(_read_all(late))
        assert client.get("/healthz").status_code == 200
    assert status == 413 and "upload of" in json.loads(answer)["error"]
    assert b"\r\nconnection: close\r\n" in refused  # the protocol's own answer, not ASGI's (which keeps it open)
    assert chunked_status == 413 and "over the limit" in json.loads(chunked_answer)["error"]
    assert late_status == 408 and "did not arrive within 0.5 s" in json.loads(late_answer)["error"]


def test_pipelined_and_closing_infer_requests_are_answered_in_order(service, write_clip):
    clips = [write_clip(f"{i}.wav", seconds=0.6 + 0.3 * i, seed=i).read_bytes() for i in range(3)]
    with service() as client:
        direct = [
            _responses(_read_all(_sent(client, _infer_request(wav, "Connection: close\r\n"))))[0] for wav in clips
        ]
        # Three infer requests and a health check in one send; the last asks to close: answered in order.
        burst = (_infer_request(clips[0]) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + _infer_request(clips[1])
                 + _infer_request(clips[2], "Connection: close\r\n"))  # fmt: skip
        answers = _responses(_read_all(_sent(client, burst)))
        # HTTP/1.0 without keep-alive: answered, then closed.
        old = _responses(_read_all(_sent(client, _infer_request(clips[0], http="1.0"))))
    assert [status for status, _ in answers] == [200, 200, 200, 200]
    assert json.loads(answers[1][1]) == {"status": "ok"}
    assert _labels([answers[0], answers[2], answers[3]]) == _labels(direct)
    assert [answers[0][1], answers[2][1], answers[3][1]] == [body for _, body in direct]
    assert old == [direct[0]]


def test_an_infer_request_with_expect_100_continue_is_answered(service, write_clip):
    wav = write_clip("a.wav", seconds=0.5).read_bytes()
    request = _infer_request(wav, "Expect: 100-continue\r\nConnection: close\r\n")
    head, _, body = request.partition(b"\r\n\r\n")
    with service() as client:
        conn = socket.create_connection(("127.0.0.1", client.base_url.port))
        conn.settimeout(10)
        conn.sendall(head + b"\r\n\r\n")
        assert conn.recv(64).startswith(b"HTTP/1.1 100 Continue")
        conn.sendall(body)
        (status, answer), *_ = _responses(_read_all(conn))
    assert status == 200 and json.loads(answer)["outputs"][0]["name"] == "LABEL"


def test_a_client_gone_before_its_infer_answer_leaves_the_service_up(service, write_clip, caplog):
    import logging
    import time

    wav = write_clip("a.wav", seconds=1.0).read_bytes()
    caplog.set_level(logging.INFO, logger="ser.serve")
    with service(max_wait_ms=200) as client:  # the clip waits 0.2 s for company: gone before its batch runs
        for _ in range(5):
            gone = _sent(client, _infer_request(wav))
            time.sleep(0.05)
            gone.close()
        time.sleep(0.5)
        answer = _responses(_read_all(_sent(client, _infer_request(wav, "Connection: close\r\n"))))
        metrics = client.get("/metrics").text
    assert [status for status, _ in answer] == [200]
    assert "Traceback" not in caplog.text and 'status="500"' not in metrics


def _sent(client, data: bytes) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", client.base_url.port))
    conn.settimeout(30)
    conn.sendall(data)
    return conn


def test_an_infer_request_asking_to_upgrade_is_left_to_uvicorn(service, write_clip, caplog):
    import logging

    wav = write_clip("a.wav", seconds=0.5).read_bytes()
    caplog.set_level(logging.WARNING)
    with service() as client:
        conn = _sent(client, _infer_request(wav, "Connection: Upgrade\r\nUpgrade: websocket\r\n"))
        answer = _read_all(conn)
        assert client.get("/healthz").status_code == 200
    # Without a WebSocket library uvicorn declines the upgrade; llhttp stops at it, so the body never arrives.
    assert answer.startswith(b"HTTP/1.1 400") and b"not a length within the 0-byte body" in answer
    assert "Fatal error" not in caplog.text and "Traceback" not in caplog.text


def test_infer_requests_answered_by_the_protocol_are_in_uvicorns_access_log(tiny_bundle, write_clip, capfd):
    from ser.serve import ServeSettings
    from tests.serve.conftest import running_service

    wav = write_clip("a.wav", seconds=0.5).read_bytes()
    with running_service(ServeSettings(bundle=str(tiny_bundle("wavlm")), threads=1), log_level="info") as client:
        answers = _responses(_read_all(_sent(client, _infer_request(wav, "Connection: close\r\n"))))
    logged = capfd.readouterr()
    assert [status for status, _ in answers] == [200]
    assert '"POST /v2/models/wavlm/infer HTTP/1.1" 200' in logged.out + logged.err
    assert "Logging error" not in logged.err
