"""Batch fixtures: a folder of real audio with hostile files among the good ones, and a real S3-compatible
server on loopback (moto's server mode) with credentials that only it accepts."""

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser.audio import SAMPLE_RATE
from ser.data.signals import synthetic_voice
from tests.hostile import flac_claiming_frames, float_wav, wav_claiming_rate

# name → why the job must answer it with an error row
BAD_FILES = {
    "empty.wav": "the file is empty",
    "junk.wav": "not readable audio",
    "truncated.wav": "truncated",
    "rate-1hz.wav": "outside 4000-384000 Hz",
    "huge-claim.flac": "over the limit",
    "near-float-max.wav": "not finite",
    "too-long.wav": "over the limit of 60 s",
}


def write_clips(folder: Path, count: int, seconds: Callable[[int], float] = lambda i: 0.5 + 0.1 * i) -> list[Path]:
    """`count` good clips of speech-like audio, in two sub-folders, some at 44.1 kHz stereo (resampled on read)."""
    paths = []
    for i in range(count):
        path = folder / ("a" if i % 2 else "b") / f"clip-{i:03d}.{'flac' if i % 3 == 0 else 'wav'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        rate = 44_100 if i % 4 == 0 else SAMPLE_RATE
        mono = synthetic_voice(int(seconds(i) * rate), seed=i, rate=rate)
        sf.write(path, np.stack([mono, 0.8 * mono], axis=1) if i % 4 == 0 else mono, rate)
        paths.append(path)
    return paths


def write_bad_files(folder: Path) -> dict[str, str]:
    """The files of BAD_FILES in `folder`; returns their absolute paths → the reason expected."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good-for-truncation.wav"
    sf.write(good, synthetic_voice(SAMPLE_RATE, seed=0), SAMPLE_RATE)
    contents = {
        "empty.wav": b"",
        "junk.wav": b"RIFF\x10\x00\x00\x00WAVEjunk that is not a chunk",
        "truncated.wav": good.read_bytes()[:-4000],
        "rate-1hz.wav": wav_claiming_rate(1),
        "huge-claim.flac": flac_claiming_frames((1 << 36) - 1),
        "near-float-max.wav": float_wav(3.0e38, channels=1),
    }
    good.unlink()
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    sf.write(folder / "too-long.wav", np.zeros(61 * 8_000, np.float32), 8_000)
    return {str((folder / name).absolute()): reason for name, reason in BAD_FILES.items()}


@pytest.fixture
def clips(tmp_path) -> tuple[Path, list[Path], dict[str, str]]:
    """(folder, its good clips, its bad files → reason): 12 good and every kind of bad file."""
    folder = tmp_path / "calls"
    good = write_clips(folder, 12)
    bad = write_bad_files(folder / "bad")
    (folder / "notes.txt").write_text("not audio: not listed")
    (folder / ".hidden.wav").write_bytes(b"an editor's temporary file: not listed")
    return folder, good, bad


@pytest.fixture
def s3(monkeypatch) -> Iterator[tuple[str, object]]:
    """(endpoint, boto3 client) of a real S3-compatible server on loopback, with one bucket, `calls`."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    for key, value in {"AWS_ACCESS_KEY_ID": "ser-test", "AWS_SECRET_ACCESS_KEY": "ser-test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="calls")
    try:
        yield endpoint, client
    finally:
        server.stop()


def upload(client, folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), "calls", f"{prefix}/{path.relative_to(folder).as_posix()}")
