"""The Open Inference Protocol's HTTP/REST body (KServe v2, Triton's HTTP API) for ser-serve's /v2 endpoints.

JSON tensors, and Triton's binary tensor extension: the JSON header first (its length in the
`Inference-Header-Content-Length` header), then each input whose parameters give `binary_data_size`,
in order, as raw little-endian values (BYTES: each element a 4-byte length, then its bytes). Encoded
audio files travel as BYTES, which JSON cannot carry intact, so tritonclient's default (binary) is the
way to send AUDIO_FILE. Answers are JSON. Tensors: ser.runtime.oip.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32}
HEADER_LENGTH = "inference-header-content-length"


class ProtocolError(ValueError):
    """A request body that is not an inference request: the message says which part."""


def parse_infer_request(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(the JSON header, name → tensor) of an infer request body."""
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {header_length!r} is not a length within the {len(body)}-byte body")
        # The binary part as a view: its tensors are cut from it without copying the body (BYTES elements are
        # copied once, as each becomes its own bytes).
        header, binary = body[: int(header_length)], memoryview(body)[int(header_length) :]
    try:
        request = json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolError(f"the request header is not JSON: {e}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise ProtocolError('expected a JSON object with a non-empty "inputs" list')
    tensors, offset = {}, 0
    for i, spec in enumerate(request["inputs"]):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ProtocolError(f"inputs[{i}]: expected an object with a name")
        name, datatype, shape = spec["name"], spec.get("datatype"), spec.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ProtocolError(f"{name}: shape must be a list of non-negative integers, got {shape!r}")
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ProtocolError(f"{name}: binary_data_size {size!r} runs past the body's binary data")
            tensors[name] = _from_binary(name, datatype, shape, binary[offset : offset + size])
            offset += size
        else:
            tensors[name] = _from_json(name, datatype, shape, spec.get("data"))
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data that no input claims")
    return request, tensors


def _count(shape: list[int]) -> int:
    """Elements in `shape`, exactly: numpy's product wraps around in 64 bits, so a claimed shape of
    [2**32, 2**32] would count as 0 elements and pass for an empty tensor."""
    return math.prod(shape)


def _from_binary(name: str, datatype: Any, shape: list[int], data: memoryview) -> np.ndarray:
    if datatype == "BYTES":
        elements, pos = [], 0
        while pos < len(data):
            if pos + 4 > len(data):
                raise ProtocolError(f"{name}: a BYTES element's length is cut off")
            (n,) = struct.unpack_from("<I", data, pos)
            if pos + 4 + n > len(data):
                raise ProtocolError(f"{name}: a BYTES element claims {n} bytes past the end of its data")
            elements.append(bytes(data[pos + 4 : pos + 4 + n]))
            pos += 4 + n
        if len(elements) != _count(shape):
            raise ProtocolError(f"{name}: {len(elements)} BYTES elements for shape {shape}")
        return np.array(elements, dtype=object).reshape(shape)
    dtype = _dtype(name, datatype)
    if len(data) != _count(shape) * np.dtype(dtype).itemsize:
        raise ProtocolError(f"{name}: {len(data)} bytes of {datatype} for shape {shape}")
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def _from_json(name: str, datatype: Any, shape: list[int], data: Any) -> np.ndarray:
    if not isinstance(data, list):
        raise ProtocolError(f"{name}: expected data as a list (or binary data)")
    flat = np.asarray(data, dtype=object).reshape(-1) if data else np.array([], dtype=object)
    if flat.size != _count(shape):
        raise ProtocolError(f"{name}: {flat.size} values for shape {shape}")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise ProtocolError(f"{name}: BYTES data in JSON must be strings")
        return np.array([v.encode("utf-8") for v in flat], dtype=object).reshape(shape)
    try:
        return np.array(flat.tolist(), dtype=_dtype(name, datatype)).reshape(shape)
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError(f"{name}: data is not {datatype} values") from None


def _dtype(name: str, datatype: Any) -> type:
    if datatype not in DTYPES:
        raise ProtocolError(f"{name}: datatype {datatype!r} is not one of BYTES, {', '.join(DTYPES)}")
    return DTYPES[datatype]


def infer_response(model: str, request: dict[str, Any], outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The JSON answer: each output with its datatype, shape and flat data (BYTES as text)."""
    answer: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": []}
    if isinstance(request.get("id"), str):
        answer["id"] = request["id"]
    for name, tensor in outputs.items():
        if tensor.dtype == object:
            data = [v.decode("utf-8", errors="replace") for v in tensor.reshape(-1)]
            datatype = "BYTES"
        else:
            data, datatype = tensor.reshape(-1).tolist(), "FP32"
        answer["outputs"].append({"name": name, "datatype": datatype, "shape": list(tensor.shape), "data": data})
    return answer
