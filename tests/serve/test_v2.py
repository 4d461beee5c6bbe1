"""ser-serve's Open Inference Protocol endpoints, spoken to with Triton's own client (tritonclient.http),
as the Triton tests speak to a real Triton: one client for either server."""

import io
import json
import struct

import numpy as np
import pytest
import soundfile as sf

from ser.runtime import EmotionRecognizer
from ser.runtime.recognizer import pad_batch
from tests.conftest import speech_like
from tests.hostile import wav_claiming_rate

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (the triton extra) is not installed")


def _wav(seconds: float, seed: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, speech_like(seconds, seed=seed), 16_000, format="WAV")
    return buffer.getvalue()


def _files(files: list[bytes]):
    tensor = httpclient.InferInput("AUDIO_FILE", [len(files), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[f] for f in files], dtype=object))  # binary tensor extension
    return [tensor]


def _samples(clips: list[np.ndarray], binary: bool):
    audio, lengths = pad_batch(clips)
    tensors = [
        httpclient.InferInput("AUDIO", list(audio.shape), "FP32"),
        httpclient.InferInput("LENGTHS", [len(clips), 1], "INT64"),
    ]
    tensors[0].set_data_from_numpy(audio, binary_data=binary)
    tensors[1].set_data_from_numpy(lengths[:, None], binary_data=binary)
    return tensors


def _client(client) -> "httpclient.InferenceServerClient":
    return httpclient.InferenceServerClient(f"127.0.0.1:{client.base_url.port}")


@pytest.mark.parametrize("instances", [1, 2])
def test_health_metadata_and_inference_through_tritonclient(service, tiny_bundle, instances):
    files = [_wav(1.0, 1), _wav(0.6, 2)]
    clips = [speech_like(1.3, seed=3), speech_like(0.5, seed=4)]
    with EmotionRecognizer.load(tiny_bundle("wavlm"), backend="onnxruntime-cpu") as recognizer:
        expected_files = [recognizer.predict(f) for f in files]
        expected_clips = recognizer.classify(clips)
        labels = list(recognizer.labels)
    with service(instances=instances) as client:
        triton = _client(client)
        assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready("wavlm")
        metadata = triton.get_model_metadata("wavlm")
        assert [i["name"] for i in metadata["inputs"]] == ["AUDIO_FILE", "AUDIO", "LENGTHS"]
        assert metadata["outputs"][1] == {"name": "SCORES", "datatype": "FP32", "shape": [-1, 7]}
        answers = [
            (triton.infer("wavlm", _files(files)), expected_files),
            (triton.infer("wavlm", _samples(clips, binary=True)), expected_clips),
            (triton.infer("wavlm", _samples(clips, binary=False)), expected_clips),  # JSON tensors
        ]
        metrics = client.get("/metrics").text
    assert 'ser_requests_total{endpoint="/v2/models/{name}/infer",status="200"} 3.0' in metrics  # the route
    for result, expected in answers:
        got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("LABEL").reshape(-1)]
        assert got == [p.label for p in expected]
        np.testing.assert_allclose(result.as_numpy("SCORES"), [[p.scores[k] for k in labels] for p in expected],
                                   atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("instances", [1, 2])
def test_bad_requests_get_the_protocols_error_form(service, instances):
    from tritonclient.utils import InferenceServerException

    with service(instances=instances) as client:
        triton = _client(client)
        with pytest.raises(InferenceServerException, match="outside 4000-384000 Hz"):
            triton.infer("wavlm", _files([wav_claiming_rate(1)]))
        with pytest.raises(InferenceServerException, match="no model 'hubert'"):
            triton.infer("hubert", _files([_wav(1.0, 1)]))
        lengths = httpclient.InferInput("LENGTHS", [1, 1], "INT64")
        lengths.set_data_from_numpy(np.array([[16000]], dtype=np.int64))
        with pytest.raises(InferenceServerException, match="no audio"):
            triton.infer("wavlm", [lengths])
        raw = client.post("/v2/models/wavlm/infer", content=b"{not json", headers={"content-type": "application/json"})
        cut = client.post("/v2/models/wavlm/infer", content=b'{"inputs": []}xx',
                          headers={"inference-header-content-length": "99"})  # fmt: skip
        ok = triton.infer("wavlm", _files([_wav(1.0, 1)]))
        element = wav_claiming_rate(1)
        header = json.dumps({"inputs": [{"name": "AUDIO_FILE", "shape": [1, 1], "datatype": "BYTES",
                                         "parameters": {"binary_data_size": len(element) + 4}}]}).encode()  # fmt: skip
        undecodable = client.post("/v2/models/wavlm/infer", content=header + struct.pack("<I", len(element)) + element,
                                  headers={"inference-header-content-length": str(len(header))})  # fmt: skip
        huge = json.dumps({"inputs": [{"name": "AUDIO", "shape": [2**32, 2**32], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 0}}]}).encode()  # fmt: skip
        overflowing = client.post("/v2/models/wavlm/infer", content=huge,  # 2**64 elements in 0 bytes
                                  headers={"inference-header-content-length": str(len(huge))})  # fmt: skip
    assert undecodable.status_code == 400 and "outside 4000-384000 Hz" in undecodable.json()["error"]
    assert raw.status_code == 400 and "not JSON" in raw.json()["error"]
    assert overflowing.status_code == 400 and "0 bytes of FP32 for shape" in overflowing.json()["error"]
    assert cut.status_code == 400 and "not a length within" in cut.json()["error"]
    assert ok.as_numpy("SCORES").shape == (1, 7)


def test_the_infer_route_answers_only_its_own_path_and_method(service):
    """The infer route is answered ahead of FastAPI: other methods, look-alike paths and the schema still hold."""
    with service() as client:
        get = client.get("/v2/models/wavlm/infer")
        paths = ("/v2/models//infer", "/v2/models/a/b/infer", "/v2/models/wavlm/infer/", "/v2/models/wavlm")
        lookalikes = [client.post(path, content=b"{}") for path in paths]
        metadata = client.get("/v2/models/wavlm")
        schema = client.get("/openapi.json").json()
        metrics = client.get("/metrics").text
    assert get.status_code == 405 and get.headers["allow"] == "POST" and "POST" in get.json()["error"]
    assert [r.status_code for r in lookalikes] == [404, 404, 404, 405]  # FastAPI's own answers
    assert metadata.status_code == 200 and metadata.json()["name"] == "wavlm"
    operation = schema["paths"]["/v2/models/{name}/infer"]["post"]
    assert "AUDIO_FILE" in operation["description"] and "400" in operation["responses"]
    assert {"/v2/models/{name}", "/v1/predict"} <= set(schema["paths"])
    assert 'ser_requests_total{endpoint="/v2/models/{name}/infer",status="405"} 1.0' in metrics


def test_a_dimensional_bundle_answers_a_dimensions_tensor(dimensional_bundle):
    from ser.serve import ServeSettings
    from tests.serve.conftest import running_service

    clips = [speech_like(1.3, seed=3), speech_like(0.5, seed=4)]
    with EmotionRecognizer.load(dimensional_bundle, backend="onnxruntime-cpu") as recognizer:
        expected = recognizer.classify(clips)
    with running_service(ServeSettings(bundle=str(dimensional_bundle), threads=1)) as client:
        triton = _client(client)
        name = "wav2vec2"
        metadata = triton.get_model_metadata(name)
        result = triton.infer(name, _samples(clips, binary=True))
    assert [o["name"] for o in metadata["outputs"]] == ["DIMENSIONS", "EMBEDDING"]
    assert metadata["outputs"][0] == {"name": "DIMENSIONS", "datatype": "FP32", "shape": [-1, 3]}
    assert metadata["parameters"]["dimensions"] == ["arousal", "dominance", "valence"]
    assert result.as_numpy("LABEL") is None and result.as_numpy("SCORES") is None
    names = metadata["parameters"]["dimensions"]
    np.testing.assert_allclose(result.as_numpy("DIMENSIONS"), [[p.dimensions[d] for d in names] for p in expected],
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(result.as_numpy("EMBEDDING"), [p.embedding for p in expected], atol=1e-5)
