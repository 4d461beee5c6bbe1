"""The python flavour of `ser-export --triton` in a real Triton Inference Server (the nvidia-pytriton
wheel's tritonserver and Python backend), spoken to with tritonclient over HTTP and gRPC."""

import numpy as np
import pytest
from click.testing import CliRunner

from ser.runtime import EmotionRecognizer
from ser.runtime.recognizer import pad_batch
from tests.conftest import speech_like
from tests.hostile import float_wav, wav_claiming_rate
from tests.triton_server import start_triton, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


@pytest.fixture(scope="module")
def triton(tmp_path_factory, dimensional_bundle, tiny_bundle):
    """A tritonserver serving the tiny wavlm bundle's python flavour, written by the CLI, and beside it a
    dimensional bundle (audeering's layout, with its embedding) as `wav2vec2` and a Whisper one as `whisper`."""
    from ser.bundle import Bundle
    from ser.cli.export import export_command
    from ser.export.triton import TritonOptions, write_triton_repository

    work = tmp_path_factory.mktemp("triton")
    repository = work / "models"
    args = ["--model", "wavlm", "--size", "tiny", "--random-init", "--out", str(work / "bundle"), "-q",
            "--triton", str(repository), "--triton-backend", "python", "--triton-max-batch", "8"]  # fmt: skip
    result = CliRunner().invoke(export_command, args)
    assert result.exit_code == 0, result.output
    write_triton_repository(Bundle.load(dimensional_bundle), repository, TritonOptions(backend="python"))
    write_triton_repository(Bundle.load(tiny_bundle("whisper")), repository, TritonOptions(backend="python"))
    server = start_triton(repository, work)
    yield server, work / "bundle"
    server.stop()


def _wav(seconds: float, seed: int) -> bytes:
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, speech_like(seconds, seed=seed), 16_000, format="WAV")
    return buffer.getvalue()


def _file_inputs(module, files: list[bytes]):
    tensor = module.InferInput("AUDIO_FILE", [len(files), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[f] for f in files], dtype=object))
    return [tensor]


def _sample_inputs(module, clips: list[np.ndarray]):
    audio, lengths = pad_batch(clips)
    tensors = [
        module.InferInput("AUDIO", list(audio.shape), "FP32"),
        module.InferInput("LENGTHS", [len(clips), 1], "INT64"),
    ]
    tensors[0].set_data_from_numpy(audio)
    tensors[1].set_data_from_numpy(lengths[:, None])
    return tensors


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_answers_equal_the_recognizers_over_http_and_grpc(triton, protocol):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    server, bundle = triton
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    assert client.is_server_ready() and client.is_model_ready("wavlm")
    files = [_wav(1.0, 1), _wav(0.6, 2)]
    clips = [speech_like(1.3, seed=3), speech_like(0.5, seed=4)]
    with EmotionRecognizer.load(bundle, backend="onnxruntime-cpu") as recognizer:
        expected_files = [recognizer.predict(f) for f in files]
        expected_clips = recognizer.classify(clips)
    labels = list(recognizer.labels)
    for inputs, expected in (
        (_file_inputs(module, files), expected_files),
        (_sample_inputs(module, clips), expected_clips),
    ):
        result = client.infer("wavlm", inputs)
        got_labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("LABEL").reshape(-1)]
        scores = result.as_numpy("SCORES")
        assert got_labels == [p.label for p in expected]
        np.testing.assert_allclose(scores, [[p.scores[k] for k in labels] for p in expected], atol=1e-5)


def test_bad_audio_is_that_requests_error_and_the_server_stays_up(triton):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    server, _ = triton
    client = httpclient.InferenceServerClient(server.http_url)
    for bad, reason in ((wav_claiming_rate(1), "outside 4000-384000 Hz"), (b"RIFF junk", "not readable audio"),
                        (float_wav(3.4e38), "not finite")):  # fmt: skip
        with pytest.raises(InferenceServerException, match=reason):
            client.infer("wavlm", _file_inputs(httpclient, [bad]))
    result = client.infer("wavlm", _file_inputs(httpclient, [_wav(1.0, 1)]))
    assert result.as_numpy("SCORES").shape == (1, 7)
    assert client.is_server_live()


def test_the_dynamic_batcher_groups_concurrent_clips_of_different_lengths(triton):
    """Eight concurrent requests of eight lengths: Triton hands them to the model together (its statistics
    count fewer executions than requests), and each gets the answer it gets alone."""
    import threading
    import time

    import tritonclient.http as httpclient

    server, bundle = triton
    stats = httpclient.InferenceServerClient(server.http_url)
    before = stats.get_inference_statistics("wavlm")["model_stats"][0]
    clips = [speech_like(0.4 + 0.3 * i, seed=10 + i) for i in range(8)]
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(clips))

    def send(i: int) -> None:
        client, inputs = httpclient.InferenceServerClient(server.http_url), _sample_inputs(httpclient, [clips[i]])
        start.wait()  # all eight leave together
        results[i] = client.infer("wavlm", inputs).as_numpy("SCORES")[0]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    deadline = time.monotonic() + 10  # the statistics trail the answers a little
    while time.monotonic() < deadline:
        after = stats.get_inference_statistics("wavlm")["model_stats"][0]
        if after["inference_count"] - before["inference_count"] >= len(clips):
            break
        time.sleep(0.1)
    with EmotionRecognizer.load(bundle, backend="onnxruntime-cpu") as recognizer:
        expected = [recognizer.classify([clip])[0] for clip in clips]
    labels = list(recognizer.labels)
    for i, prediction in enumerate(expected):
        np.testing.assert_allclose(results[i], [prediction.scores[k] for k in labels], atol=1e-5)
    requests = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert requests == 8 and executions < 8, (requests, executions)


def test_a_dimensional_model_answers_its_dimensions_and_embedding(triton, dimensional_bundle):
    import tritonclient.http as httpclient

    server, _ = triton
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_model_ready("wav2vec2")
    outputs = {o["name"]: o for o in client.get_model_metadata("wav2vec2")["outputs"]}
    assert set(outputs) == {"DIMENSIONS", "EMBEDDING"} and outputs["DIMENSIONS"]["shape"] == [-1, 3]
    clips = [speech_like(1.3, seed=3), speech_like(0.5, seed=4)]
    with EmotionRecognizer.load(dimensional_bundle, backend="onnxruntime-cpu") as recognizer:
        expected = recognizer.classify(clips)
        names = recognizer.labels
    result = client.infer("wav2vec2", _sample_inputs(httpclient, clips))
    np.testing.assert_allclose(result.as_numpy("DIMENSIONS"), [[p.dimensions[d] for d in names] for p in expected],
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(result.as_numpy("EMBEDDING"), [p.embedding for p in expected], atol=1e-5)
    files = client.infer("wav2vec2", _file_inputs(httpclient, [_wav(1.0, 1)]))
    assert files.as_numpy("DIMENSIONS").shape == (1, 3)


def test_a_whisper_bundle_answers_ragged_batches_and_files_as_the_recognizer(triton, tiny_bundle):
    """Whisper's 30 s log-mel front end runs inside the served graph: samples of different lengths in one request,
    and audio files, answer as the runtime does."""
    import tritonclient.http as httpclient

    server, _ = triton
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_model_ready("whisper")
    clips = [speech_like(2.2, seed=5), speech_like(0.7, seed=6)]
    with EmotionRecognizer.load(tiny_bundle("whisper"), backend="onnxruntime-cpu") as recognizer:
        expected = recognizer.classify(clips)
        by_file = recognizer.predict(_wav(1.0, 1))
        labels = recognizer.labels
    result = client.infer("whisper", _sample_inputs(httpclient, clips))
    np.testing.assert_allclose(result.as_numpy("SCORES"), [[p.scores[k] for k in labels] for p in expected],
                               atol=1e-5)  # fmt: skip
    files = client.infer("whisper", _file_inputs(httpclient, [_wav(1.0, 1)]))
    np.testing.assert_allclose(files.as_numpy("SCORES")[0], [by_file.scores[k] for k in labels], atol=1e-5)
