"""The Open Inference Protocol v2 (KServe / Triton / MLServer), REST, with Triton's binary tensor extension.

A codec and nothing else: ``decode`` turns a request body into the core's ``TensorRequest`` (and how the answer
is to be written), ``encode`` writes the core's output tensors as the protocol's answer. What a model does with
its tensors (rows of a tabular model, images of a classifier, a tensor model's own inputs) is the served model's
handler (``ServedModel.infer``), chosen when it was loaded."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from modelport.errors import InvalidInputError
from modelport.serving.http import Reply, is_decimal, parse_json
from modelport.serving.runtime import ServedModel, TensorRequest

DATATYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}
_DTYPE_TO_V2 = {np.dtype(v): k for k, v in DATATYPES.items() if k != "BYTES"}  # keyed by dtype: .name is slow
_NUMPY_TO_V2 = {dtype.name: k for dtype, k in _DTYPE_TO_V2.items()}
_SIG_TO_V2 = {**_NUMPY_TO_V2, "string": "BYTES", "object": "BYTES"}
HEADER_LENGTH = "inference-header-content-length"
_NUMBERS = {int, float}
_NUMBER_OR_BOOL = {int, float, bool}
_INT = {int}


def v2_datatype(dtype: str) -> str:
    return _SIG_TO_V2.get(dtype, "BYTES")


# -- requests ----------------------------------------------------------------------------------

def split_body(body: bytes, header_length: str | None) -> tuple[Any, memoryview]:
    """→ (the request JSON, the binary tensor data after it: Triton's binary extension)."""
    if header_length is None:
        return parse_json(body), memoryview(b"")
    if not is_decimal(header_length) or int(header_length) > len(body):
        raise InvalidInputError("Inference-Header-Content-Length does not fit the request body")
    split = int(header_length)
    return parse_json(body[:split]), memoryview(body)[split:]


def parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """``obj["parameters"]``: the protocol says an object; absent or null is none."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if type(params) is not dict:
        raise InvalidInputError(f'{where}"parameters" must be a JSON object, got {_json_type(params)}')
    return params


def _flag(params: dict[str, Any], key: str, where: str, default: bool = False) -> bool:
    value = params.get(key, default)
    if type(value) is not bool:
        raise InvalidInputError(f'{where}parameter "{key}" must be true or false, got {_json_type(value)}')
    return value


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def requested_outputs(request: dict[str, Any]) -> dict[str, bool | None]:
    """The outputs the request names → whether each is wanted as binary data (None: the request's
    default). Empty when it names none: then every output is returned."""
    requested = request.get("outputs")
    if requested is None:
        return {}
    if type(requested) is not list:
        raise InvalidInputError(f'"outputs" must be a list of objects with a name, got {_json_type(requested)}')
    wanted: dict[str, bool | None] = {}
    for i, spec in enumerate(requested):
        if type(spec) is not dict:
            raise InvalidInputError(f"outputs[{i}] must be an object with a name, got {_json_type(spec)}")
        name = spec.get("name")
        if type(name) is not str or not name:
            raise InvalidInputError(f'outputs[{i}]: "name" must be a non-empty string, got {_json_type(name)}')
        params = parameters(spec, f"outputs[{i}]: ")
        wanted[name] = _flag(params, "binary_data", f"outputs[{i}]: ") if "binary_data" in params else None
    return wanted


@dataclass(slots=True)
class Encoding:
    """How a request wants its answer written: its id (echoed), the outputs it names → whether each is
    wanted as binary data (None: the request's default; none named: every output), and that default."""

    id: str | None = None
    outputs: dict[str, bool | None] = field(default_factory=dict)
    binary: bool = False


def decode(body: bytes, header_length: str | None) -> tuple[TensorRequest, Encoding]:
    """A request body (and its Inference-Header-Content-Length) → (the core's request, how to write the answer)."""
    request, binary = split_body(body, header_length)
    if not binary:
        plain = plain_request(request)
        if plain is not None:
            return plain
    inputs, unchecked, raw = decode_inputs(request, binary)
    outputs = requested_outputs(request)
    params = parameters(request, "")
    return (TensorRequest(inputs, frozenset(unchecked), frozenset(raw), frozenset(outputs), params),
            Encoding(request.get("id"), outputs, _flag(params, "binary_data_output", "")))


_PLAIN_KEYS = ({"inputs"}, {"inputs", "id"})
_PLAIN_SPEC_KEYS = {"name", "shape", "datatype", "data"}


def plain_request(request: Any) -> tuple[TensorRequest, Encoding] | None:
    """The usual request (one FP64 tensor of flat JSON numbers, no outputs named, no parameters) in one
    pass, or None to take the general path (``decode_inputs``), which decodes it to the same tensor slower
    and explains what is wrong with any other."""
    if type(request) is not dict or request.keys() not in _PLAIN_KEYS or type(request.get("id", "")) is not str:
        return None
    inputs = request["inputs"]
    if type(inputs) is not list or len(inputs) != 1:
        return None
    spec = inputs[0]
    if type(spec) is not dict or spec.keys() != _PLAIN_SPEC_KEYS or spec["datatype"] != "FP64":
        return None
    name, data, shape = spec["name"], spec["data"], spec["shape"]
    if type(name) is not str or not name or type(data) is not list or not data or type(shape) is not list or not shape:
        return None
    if set(map(type, shape)) != _INT or min(shape) < 0 or math.prod(shape) != len(data):
        return None
    if not set(map(type, data)) <= _NUMBERS:  # bools, strings, nulls, nested lists: the general path
        return None
    # JSON numbers are finite (orjson refuses NaN, Infinity and overflow): none is unchecked.
    return TensorRequest({name: np.array(data, dtype=np.float64).reshape(shape)}), Encoding(request.get("id"))


def decode_inputs(request: Any, binary: memoryview) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """→ (the input tensors by name, the names of those that may hold NaN or infinity, the names of those
    sent as binary data).

    Tensors sent as JSON numbers in FP64 or an integer type are finite: orjson refuses NaN,
    Infinity and numbers that overflow. Binary tensors and narrower floats may not be, so models
    that refuse NaN check just those."""
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise InvalidInputError('An inference request must be a JSON object with a non-empty "inputs" list')
    if "id" in request and type(request["id"]) is not str:
        raise InvalidInputError(f'"id" must be a string, got {_json_type(request["id"])}')
    parameters(request, "")
    tensors: dict[str, np.ndarray] = {}
    unchecked: list[str] = []
    raw: list[str] = []
    offset = 0
    for i, spec in enumerate(request["inputs"]):
        if not isinstance(spec, dict):
            raise InvalidInputError(f"inputs[{i}] must be an object with name, shape, datatype and data")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"inputs[{i}] has no name")
        shape = _shape(spec.get("shape"), name)
        datatype = spec.get("datatype")
        if type(datatype) is not str or datatype not in DATATYPES:
            raise InvalidInputError(f"Input {name!r} has datatype {datatype!r}; expected one of {', '.join(DATATYPES)}")
        size = parameters(spec, f"Input {name!r}: ").get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise InvalidInputError(f"Input {name!r}: binary_data_size does not fit the request body")
            tensors[name] = _from_binary(binary[offset:offset + size], datatype, shape, name)
            offset += size
            unchecked.append(name)
            raw.append(name)
        else:
            if "data" not in spec:
                raise InvalidInputError(f"Input {name!r} has no data")
            tensors[name] = _from_json(spec["data"], datatype, shape, name)
            if datatype in ("FP16", "FP32"):
                unchecked.append(name)
    return tensors, unchecked, raw


def _shape(shape: Any, name: str) -> tuple[int, ...]:
    if type(shape) is list and (not shape or (set(map(type, shape)) == _INT and min(shape) >= 0)):
        return tuple(shape)
    raise InvalidInputError(f"Input {name!r} needs a shape: a list of non-negative integers")


def _from_json(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = _flatten(data)
        if len(flat) != count:
            raise InvalidInputError(f"Input {name!r} has {len(flat)} elements but its shape {list(shape)} needs {count}")
        if not all(isinstance(v, str) for v in flat):
            raise InvalidInputError(f"Input {name!r} is BYTES: its data must be strings")
        arr = np.empty(count, dtype=object)
        arr[:] = [v.encode() for v in flat]
        return arr.reshape(shape)
    try:
        arr = np.asarray(data, dtype=DATATYPES[datatype])
    except OverflowError:
        raise InvalidInputError(f"Input {name!r} has values out of the range of {datatype}") from None
    except (ValueError, TypeError):
        raise InvalidInputError(f"Input {name!r} has values that are not {datatype} numbers") from None
    if _has_non_numbers(data, _NUMBER_OR_BOOL if datatype == "BOOL" else _NUMBERS):
        raise InvalidInputError(f"Input {name!r} has values that are not {datatype} numbers")
    if arr.dtype.kind in "biu" and not _fits(data, arr):
        allowed = "true, false, 0 or 1" if datatype == "BOOL" else "whole numbers"
        raise InvalidInputError(f"Input {name!r} has values that do not fit {datatype} ({allowed})")
    if arr.size != count:
        raise InvalidInputError(f"Input {name!r} has {arr.size} elements but its shape {list(shape)} needs {count}")
    return arr if arr.shape == shape else arr.reshape(shape)


def _fits(data: Any, arr: np.ndarray) -> bool:
    """Whether an integer or BOOL tensor holds exactly the numbers sent: numpy truncates 1.7 to 1
    and turns 2 into true without a word."""
    if type(data) is list and set(map(type, data)) <= _INT and arr.dtype.kind != "b":
        return True  # plain integers: numpy refused those out of range already
    try:
        return bool(np.array_equal(np.asarray(data, dtype=np.float64), arr))
    except (ValueError, TypeError):
        return False


def _has_non_numbers(data: Any, allowed: set[type]) -> bool:
    # numpy would quietly turn "1.5" or true into numbers; the protocol says data is numbers
    # (or true/false for BOOL).
    if type(data) is list and set(map(type, data)) <= allowed:  # the usual flat list, at C speed
        return False
    stack = [data]
    while stack:
        v = stack.pop()
        if type(v) is list:
            stack.extend(v)
        elif type(v) not in allowed:
            return True
    return False


def _flatten(data: Any) -> list[Any]:
    out: list[Any] = []
    stack = [data]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(reversed(v))
        else:
            out.append(v)
    return out


def _from_binary(raw: memoryview, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        items, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise InvalidInputError(f"Input {name!r}: malformed BYTES data")
            (n,) = struct.unpack_from("<I", raw, pos)
            if pos + 4 + n > len(raw):
                raise InvalidInputError(f"Input {name!r}: malformed BYTES data")
            items.append(bytes(raw[pos + 4:pos + 4 + n]))
            pos += 4 + n
        if len(items) != count:
            raise InvalidInputError(f"Input {name!r} has {len(items)} elements but its shape {list(shape)} needs {count}")
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    dtype = np.dtype(DATATYPES[datatype])
    if len(raw) != count * dtype.itemsize:
        raise InvalidInputError(f"Input {name!r}: {len(raw)} bytes of binary data do not fit shape {list(shape)} of {datatype}")
    if datatype == "BOOL" and count and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise InvalidInputError(f"Input {name!r} is BOOL: each byte of its binary data must be 0 or 1")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


# -- responses ---------------------------------------------------------------------------------

def encode(model: ServedModel, encoding: Encoding, outputs: dict[str, np.ndarray]) -> Reply:
    """The model's output tensors as the answer: those the request named (every one if none), each as
    JSON or as binary data after the JSON header, as it asked."""
    requested = encoding.outputs
    binary_names: set[str] = set()
    if requested:
        unknown = [name for name in requested if name not in outputs]
        if unknown:
            raise InvalidInputError(f"Unknown output {unknown[0]!r}; this model has {', '.join(outputs)}")
        outputs = {name: outputs[name] for name in requested}
        binary_names = {name for name, binary in requested.items() if (encoding.binary if binary is None else binary)}
    elif encoding.binary:
        binary_names = set(outputs)
    entries, chunks = [], []
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        if name in binary_names:
            datatype = _datatype(arr)
            data = _to_binary(arr, datatype)
            entries.append({"name": name, "datatype": datatype, "shape": list(arr.shape), "parameters": {"binary_data_size": len(data)}})
            chunks.append(data)
        else:
            entries.append(_json_entry(name, arr))
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": entries}
    if encoding.id is not None:
        body["id"] = encoding.id
    header = orjson.dumps(body)
    if not chunks:
        return Reply(header)
    return Reply(b"".join([header, *chunks]), content_type=b"application/octet-stream",
                 headers=[(HEADER_LENGTH.encode(), str(len(header)).encode())])


async def infer(model: ServedModel, header_length: str | None, body: bytes) -> Reply:
    """``POST /v2/models/{name}[/versions/{v}]/infer``: decode, the model's handler, encode."""
    request, encoding = decode(body, header_length)
    return encode(model, encoding, await model.infer(request))


def _datatype(arr: np.ndarray) -> str:
    return "BYTES" if arr.dtype.kind in "OSU" else _DTYPE_TO_V2.get(arr.dtype, "FP64")


def _json_entry(name: str, arr: np.ndarray) -> dict[str, Any]:
    datatype = _datatype(arr)
    return {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": _to_json(arr, datatype)}


def _to_json(arr: np.ndarray, datatype: str) -> list[Any]:
    flat = arr.reshape(-1)
    if datatype == "BYTES":
        return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in flat.tolist()]
    return flat.tolist()


def _to_binary(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for v in arr.reshape(-1).tolist():
            b = v if isinstance(v, bytes) else str(v).encode()
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    return np.ascontiguousarray(arr).tobytes()


# -- metadata ----------------------------------------------------------------------------------

def model_metadata(model: ServedModel) -> dict[str, Any]:
    return {"name": model.name, "versions": [model.version], "platform": model.info.framework,
            "inputs": [_tensor_metadata(t) for t in model.input_specs],
            "outputs": [_tensor_metadata(t) for t in model.output_specs]}


def _tensor_metadata(spec: dict[str, Any]) -> dict[str, Any]:
    return {"name": spec["name"], "datatype": v2_datatype(spec["dtype"]), "shape": spec["shape"]}
