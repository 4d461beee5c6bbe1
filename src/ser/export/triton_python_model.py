"""Triton Python-backend model for a ser bundle: `ser-export --triton DIR --triton-backend python` copies
this file as DIR/<name>/1/model.py, with the bundle beside it in 1/bundle/.

It runs inside Triton's Python stub, on ser's torch-free runtime (numpy, ONNX Runtime, soundfile, soxr:
`pip install ser` into the environment whose interpreter the stub embeds). Triton's dynamic batcher
hands `execute` every request it grouped, clips of different lengths included (AUDIO is a ragged
input); they run as one padded batch, each answered on its own. A request whose audio is bad gets an
error response; the others in its batch are still answered. Tensors: ser.runtime.oip.

Model parameters (config.pbtxt): `threads` (ONNX Runtime's CPU threads), `max_seconds` (longest clip).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python stub

from ser.audio import AudioError
from ser.runtime import EmotionRecognizer, oip

BUNDLE_FOLDER = "bundle"


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"] / BUNDLE_FOLDER
        threads = int(parameters["threads"]) if parameters.get("threads") else None
        self.max_seconds = float(parameters.get("max_seconds") or 60.0)
        self.recognizer = EmotionRecognizer.load(folder, backend="onnxruntime-cpu", threads=threads)

    def execute(self, requests: list) -> list:
        decoded: list[list[np.ndarray] | AudioError] = []
        for request in requests:
            tensors = {name: _input(request, name) for name in (oip.AUDIO_FILE, oip.AUDIO, oip.LENGTHS)}
            try:
                decoded.append(oip.clips_from_tensors({k: v for k, v in tensors.items() if v is not None},
                                                      self.max_seconds))  # fmt: skip
            except AudioError as e:
                decoded.append(e)
        clips = [clip for item in decoded if isinstance(item, list) for clip in item]
        try:
            predictions = iter(self.recognizer.classify(clips) if clips else [])
        except AudioError:  # a clip whose answer is not finite: answer each request alone
            return [self._alone(item) for item in decoded]
        responses = []
        for item in decoded:
            if isinstance(item, AudioError):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(item))))
            else:
                responses.append(self._response([next(predictions) for _ in item]))
        return responses

    def _alone(self, item: list[np.ndarray] | AudioError):
        try:
            if isinstance(item, AudioError):
                raise item
            return self._response(self.recognizer.classify(item))
        except AudioError as e:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))

    def _response(self, predictions: list):
        tensors = oip.output_tensors(predictions, self.recognizer.answer)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in tensors.items()])

    def finalize(self) -> None:
        self.recognizer.close()


def _input(request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()
