"""The Open Inference Protocol v2 (KServe / Triton / MLServer), REST, with Triton's binary tensor extension."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson

from modelport.errors import InvalidInputError
from modelport.frameworks.base import IMAGE_CLASSIFICATION
from modelport.serving.http import Reply, is_decimal, parse_json
from modelport.serving.runtime import ServedModel

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


def decode_inputs(request: Any, binary: memoryview) -> tuple[dict[str, np.ndarray], list[str]]:
    """→ (the input tensors by name, the names of those that may hold NaN or infinity).

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
        else:
            if "data" not in spec:
                raise InvalidInputError(f"Input {name!r} has no data")
            tensors[name] = _from_json(spec["data"], datatype, shape, name)
            if datatype in ("FP16", "FP32"):
                unchecked.append(name)
    return tensors, unchecked


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

def encode_response(model: ServedModel, request: dict[str, Any], outputs: dict[str, np.ndarray]) -> Reply:
    requested = requested_outputs(request)
    all_binary = _flag(parameters(request, ""), "binary_data_output", "")
    binary_names: set[str] = set()
    if requested:
        unknown = [name for name in requested if name not in outputs]
        if unknown:
            raise InvalidInputError(f"Unknown output {unknown[0]!r}; this model has {', '.join(outputs)}")
        outputs = {name: outputs[name] for name in requested}
        binary_names = {name for name, binary in requested.items() if (all_binary if binary is None else binary)}
    elif all_binary:
        binary_names = set(outputs)
    entries, chunks = [], []
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        if name in binary_names:
            datatype = _datatype(arr)
            raw = _to_binary(arr, datatype)
            entries.append({"name": name, "datatype": datatype, "shape": list(arr.shape), "parameters": {"binary_data_size": len(raw)}})
            chunks.append(raw)
        else:
            entries.append(_json_entry(name, arr))
    header = orjson.dumps(_response_body(model, request, entries))
    if not chunks:
        return Reply(header)
    return Reply(b"".join([header, *chunks]), content_type=b"application/octet-stream",
                 headers=[(b"inference-header-content-length", str(len(header)).encode())])


def _response_body(model: ServedModel, request: dict[str, Any], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": outputs}
    if "id" in request:
        body["id"] = request["id"]
    return body


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
    sig = model.info.signature
    if sig.get("kind") == "tabular":
        n = len(sig["features"])
        inputs = [{"name": "input", "datatype": "FP64", "shape": [-1, n]}]
        outputs = [{"name": "predictions", "datatype": v2_datatype(sig["output"]["dtype"]), "shape": [-1]}]
        if sig.get("classes") is not None:
            outputs.append({"name": "probabilities", "datatype": "FP64", "shape": [-1, len(sig["classes"])]})
    else:
        inputs = [{"name": t["name"], "datatype": v2_datatype(t["dtype"]), "shape": t["shape"]} for t in sig.get("inputs", [])]
        outputs = [{"name": t["name"], "datatype": v2_datatype(t["dtype"]), "shape": t["shape"]} for t in sig.get("outputs", [])]
    return {"name": model.name, "versions": [model.version], "platform": model.info.framework, "inputs": inputs, "outputs": outputs}


# -- tabular models over v2 ---------------------------------------------------------------------

def tabular_rows(model: ServedModel, tensors: dict[str, np.ndarray], unchecked: list[str]) -> np.ndarray:
    """One [N, n_features] tensor (any name), or one [N] / [N, 1] tensor per feature, by name."""
    schema = model.schema
    assert schema is not None
    if len(tensors) == 1:
        (name, arr), = tensors.items()
        if arr.dtype == object:
            raise InvalidInputError(f"Input {name!r} must be numeric")
        if arr.ndim == 1 and arr.shape[0] == schema.n:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != schema.n:
            raise InvalidInputError(f"Input {name!r} has shape {list(arr.shape)}; the model expects [N, {schema.n}] "
                                    f"({', '.join(schema.features[:10])})")
        x = arr.astype(np.float64, copy=False)
    else:
        missing = [f for f in schema.features if f not in tensors]
        if missing:
            raise InvalidInputError(f"Missing input(s) {', '.join(map(repr, missing[:10]))}: send one [N, {schema.n}] tensor, "
                                    "or one tensor per feature named after it")
        cols = [tensors[f].reshape(-1).astype(np.float64, copy=False) for f in schema.features]
        if len({len(c) for c in cols}) != 1:
            raise InvalidInputError("Feature tensors have different lengths")
        x = np.column_stack(cols)
    if x.shape[0] == 0:
        raise InvalidInputError("The input has no rows")
    if unchecked:
        schema.check_finite(x)
    return x


_PLAIN_KEYS = ({"inputs"}, {"inputs", "id"})
_PLAIN_SPEC_KEYS = {"name", "shape", "datatype", "data"}


def plain_tabular_rows(model: ServedModel, request: Any) -> np.ndarray | None:
    """The usual request to a tabular model in one pass, or None to take the general path.

    Usual means: one FP64 tensor of JSON numbers, flat data, shape [N, n_features], no outputs or
    parameters. Anything else, valid or not, goes through ``decode_inputs`` and ``tabular_rows``,
    which give the same answer slower and explain what is wrong."""
    if type(request) is not dict or request.keys() not in _PLAIN_KEYS or type(request.get("id", "")) is not str:
        return None
    inputs = request["inputs"]
    if type(inputs) is not list or len(inputs) != 1:
        return None
    spec = inputs[0]
    if type(spec) is not dict or spec.keys() != _PLAIN_SPEC_KEYS or spec["datatype"] != "FP64" or type(spec["name"]) is not str or not spec["name"]:
        return None
    data, shape, n = spec["data"], spec["shape"], model.schema.n if model.schema is not None and _tabular(model) else 0
    if type(data) is not list or not data or not n or len(data) % n or shape != [len(data) // n, n] or type(shape[0]) is not int:
        return None
    if not set(map(type, data)) <= _NUMBERS:  # bools, strings, nulls, nested lists: the general path
        return None
    # JSON numbers are finite (orjson refuses NaN, Infinity and overflow): no finiteness check.
    return np.array(data, dtype=np.float64).reshape(shape)


def plain_tabular_reply(model: ServedModel, request: dict[str, Any], y: np.ndarray) -> Reply:
    return Reply(orjson.dumps(_response_body(model, request, [_json_entry("predictions", y)])))


async def infer(model: ServedModel, header_length: str | None, body: bytes) -> Reply:
    req, binary = split_body(body, header_length)
    if not binary and model.schema is not None and _tabular(model):
        x = plain_tabular_rows(model, req)
        if x is not None:
            return plain_tabular_reply(model, req, await model.predict(x))
    tensors, unchecked = decode_inputs(req, binary)
    if model.task == IMAGE_CLASSIFICATION:  # encoded image files in, class scores out: serving/images.py
        from modelport.serving import images

        return encode_response(model, req, await images.v2_outputs(model, req, tensors))
    if model.schema is not None and _tabular(model):
        x = tabular_rows(model, tensors, unchecked)
        outputs: dict[str, np.ndarray] = {"predictions": await model.predict(x)}
        if "probabilities" in requested_outputs(req) and model.schema.classes is not None:
            outputs["probabilities"] = await model.predict_proba(x)
    else:
        outputs = await model.infer(check_tensor_inputs(model, tensors))
    return encode_response(model, req, outputs)


def _tabular(model: ServedModel) -> bool:
    """A tabular model's v2 contract (one FP64 input, "predictions" out); a tensor model keeps its own names
    here even when the simple API serves it as rows."""
    return model.info.signature.get("kind") == "tabular"


def check_tensor_inputs(model: ServedModel, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    specs = model.info.signature.get("inputs", [])
    expected = {s["name"]: s for s in specs}
    missing = [n for n in expected if n not in tensors]
    unknown = [n for n in tensors if n not in expected]
    if missing or unknown:
        raise InvalidInputError(f"The model's inputs are {', '.join(expected)}; "
                                + (f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}"))
    out = {}
    for name, spec in expected.items():
        arr = tensors[name]
        want = spec["shape"]
        if len(want) != arr.ndim or any(w not in (-1, a) for w, a in zip(want, arr.shape, strict=True)):
            raise InvalidInputError(f"Input {name!r} has shape {list(arr.shape)}; the model expects {want} (-1: any size)")
        if spec["dtype"] not in ("string", "object"):
            if arr.dtype == object:
                raise InvalidInputError(f"Input {name!r} must be numeric ({spec['dtype']})")
            arr = arr.astype(spec["dtype"], copy=False)
        out[name] = arr
    return out
