"""The HTTP protocol ser-serve runs (uvicorn's httptools with head deadlines and a head size limit), over
real sockets against the real service."""

import json
import socket

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
