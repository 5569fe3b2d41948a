"""The KServe v2 (open inference protocol) tensor format: datatypes, JSON tensors and the binary
tensor data extension, decoded to numpy and encoded back.

Every client mistake raises `RequestError` (status 4xx) with a message that names the input and
what was expected; nothing here lets a malformed body reach the runtime."""
from __future__ import annotations

import json
import math

import numpy as np
import ml_dtypes

# KServe v2 datatype <-> numpy. BF16 is ml_dtypes' bfloat16 (two bytes, little-endian).
DATATYPES = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}
_BY_NUMPY = {v: k for k, v in DATATYPES.items()}
HEADER_LENGTH = "inference-header-content-length"   # the binary extension's header (any case)


class RequestError(Exception):
    """A request the server refuses: `status` is the HTTP status (4xx for a client's mistake)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def datatype_of(dtype) -> str:
    """The v2 datatype name of a numpy dtype."""
    dt = np.dtype(dtype)
    if dt not in _BY_NUMPY:
        raise RequestError(f"dtype {dt} has no KServe v2 datatype", 500)
    return _BY_NUMPY[dt]


def numpy_of(datatype: str, where: str) -> np.dtype:
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        hint = " (BYTES tensors are not supported by these models)" if datatype == "BYTES" else ""
        raise RequestError(f"{where}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}{hint}")
    return DATATYPES[datatype]


def _shape(value, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in value):
        raise RequestError(f"{where}: 'shape' must be a list of non-negative integers, got {value!r}")
    if len(value) > 32:
        raise RequestError(f"{where}: shape {value} has more than 32 dimensions")
    return tuple(value)


def _flatten(data, where: str) -> list:
    """Row-major flattening of a (possibly nested) JSON list; scalars inside are kept as they are."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(x, list) for x in data):
        return data
    out: list = []
    stack = [iter(data)]
    while stack:
        for x in stack[-1]:
            if isinstance(x, list):
                stack.append(iter(x))
                break
            out.append(x)
        else:
            stack.pop()
    return out


def _from_json_data(data, dtype: np.dtype, shape, where: str) -> np.ndarray:
    flat = _flatten(data, where)
    count = math.prod(shape)          # Python ints: a product of huge dims must not wrap to 0
    if len(flat) == count and len(flat) != len(data):      # nested lists must nest as the shape does
        try:
            nested = np.asarray(data, dtype=object).shape
        except ValueError:
            nested = None
        if nested != tuple(shape):
            raise RequestError(f"{where}: 'data' nests as {list(nested) if nested else 'ragged lists'}, "
                               f"not as shape {list(shape)}")
    if len(flat) != count:
        raise RequestError(f"{where}: 'data' has {len(flat)} elements, shape {list(shape)} needs {count}")
    kind = dtype.kind
    for x in flat:   # JSON types must match the datatype: no silent float -> int truncation
        ok = (isinstance(x, bool) if kind == "b" else
              isinstance(x, int) and not isinstance(x, bool) if kind in "iu" else
              isinstance(x, (int, float)) and not isinstance(x, bool))
        if not ok:
            raise RequestError(f"{where}: element {x!r} is not a valid {_BY_NUMPY[dtype]} value")
    try:
        with np.errstate(over="raise", invalid="raise"):
            arr = np.array(flat, dtype=dtype if kind != "f" else np.float64)
            if kind == "f":
                finite = np.isfinite(arr)
                arr = arr.astype(dtype)
                if not np.array_equal(np.isfinite(arr), finite):
                    raise FloatingPointError
    except (OverflowError, FloatingPointError, ValueError):
        raise RequestError(f"{where}: a value is out of range for {_BY_NUMPY[dtype]}") from None
    return arr.reshape(shape)


def split_body(body: bytes, header_length: str | None) -> tuple[dict, memoryview]:
    """(JSON header, binary rest) of a request body. Without the extension's header the whole body
    is JSON."""
    if header_length is None:
        n = len(body)
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise RequestError(f"Inference-Header-Content-Length {header_length!r} is not an integer") from None
        if not 0 <= n <= len(body):
            raise RequestError(f"Inference-Header-Content-Length {n} is outside the body's {len(body)} bytes")
    try:
        head = json.loads(bytes(body[:n]))
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(head, dict):
        raise RequestError("the request body must be a JSON object")
    return head, memoryview(body)[n:]


def _parameters(obj: dict, where: str) -> dict:
    p = obj.get("parameters", {})
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise RequestError(f"{where}: 'parameters' must be an object")
    return p


def decode_inputs(head: dict, binary: memoryview) -> dict[str, np.ndarray]:
    """The request's input tensors by name, from JSON 'data' or from the binary section (in the
    order of the inputs that give `binary_data_size`)."""
    inputs = head.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("the request needs 'inputs': a non-empty list of tensors")
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for k, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise RequestError(f"inputs[{k}] must be an object with name, shape, datatype and data")
        name = t.get("name")
        if not isinstance(name, str):
            raise RequestError(f"inputs[{k}] needs a string 'name'")
        where = f"input '{name}'"
        if name in feeds:
            raise RequestError(f"{where} is given twice")
        dtype = numpy_of(t.get("datatype"), where)
        shape = _shape(t.get("shape"), where)
        size = _parameters(t, where).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise RequestError(f"{where}: binary_data_size must be a non-negative integer")
            need = math.prod(shape) * dtype.itemsize
            if size != need:
                raise RequestError(f"{where}: binary_data_size is {size} bytes, shape {list(shape)} of "
                                   f"{_BY_NUMPY[dtype]} needs {need}")
            if offset + size > len(binary):
                raise RequestError(f"{where}: the binary section ends after {len(binary)} bytes, "
                                   f"this tensor needs bytes {offset}..{offset + size}")
            arr = np.frombuffer(binary[offset:offset + size], dtype=dtype.newbyteorder("<")).astype(dtype)
            offset += size
            if dtype.kind == "b" and arr.view(np.uint8).max(initial=0) > 1:
                raise RequestError(f"{where}: BOOL bytes must be 0 or 1")
            feeds[name] = arr.reshape(shape)
        else:
            if "data" not in t:
                raise RequestError(f"{where} needs 'data' (or parameters.binary_data_size with binary data)")
            feeds[name] = _from_json_data(t["data"], dtype, shape, where)
    if offset != len(binary):
        raise RequestError(f"the binary section has {len(binary)} bytes, the inputs use {offset}")
    return feeds


def requested_outputs(head: dict, available: list[str]) -> list[tuple[str, bool]]:
    """[(output name, as binary)] the response carries, in order."""
    params = _parameters(head, "the request")
    default_binary = bool(params.get("binary_data_output", False))
    outs = head.get("outputs")
    if outs is None:
        return [(n, default_binary) for n in available]
    if not isinstance(outs, list):
        raise RequestError("'outputs' must be a list of {name, parameters}")
    picked = []
    for k, o in enumerate(outs):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise RequestError(f"outputs[{k}] needs a string 'name'")
        if o["name"] not in available:
            raise RequestError(f"output '{o['name']}' is not an output of this model; its outputs are "
                               f"{', '.join(available)}")
        p = _parameters(o, f"output '{o['name']}'")
        if p.get("classification"):
            raise RequestError("the classification extension is not supported")
        picked.append((o["name"], bool(p.get("binary_data", default_binary))))
    return picked


def encode_response(model: str, version: str, request_id, outputs: list[tuple[str, np.ndarray, bool]]
                    ) -> tuple[bytes, int | None]:
    """(body, JSON header length or None). Binary outputs follow the JSON header, in order."""
    tensors, blobs = [], []
    for name, arr, binary in outputs:
        t = {"name": name, "datatype": datatype_of(arr.dtype), "shape": list(arr.shape)}
        if binary:
            raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            t["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            data = arr.astype(np.float32) if arr.dtype == DATATYPES["BF16"] else arr
            t["data"] = data.reshape(-1).tolist()
        tensors.append(t)
    head = {"model_name": model, "model_version": version, "outputs": tensors}
    if request_id is not None:
        head["id"] = request_id
    text = json.dumps(head, allow_nan=True).encode()
    if not blobs:
        return text, None
    return b"".join([text, *blobs]), len(text)

