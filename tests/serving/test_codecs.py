"""Unit tests of the pieces between bytes and a model call, with no server: the v2 codec (JSON and
Triton's binary tensor extension), the served models' handlers of its requests, the tabular schema of the
simple API, and metrics flushing."""

from __future__ import annotations

import asyncio
import struct
import uuid
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY

from modelport.errors import InvalidInputError
from modelport.serving import v2
from modelport.serving.metrics import MetricsFlusher, ModelMetrics
from modelport.serving.runtime import ServeSpec, TensorRequest, load_models
from modelport.serving.tabular import TabularSchema
from modelport.store import ModelStore

# -- v2 requests -------------------------------------------------------------------------------


def decode(request: dict, binary: bytes = b"") -> dict[str, np.ndarray]:
    return v2.decode_inputs(request, memoryview(binary))[0]


def test_json_tensors_decode_to_their_datatype_and_shape() -> None:
    tensors, unchecked, raw = v2.decode_inputs({"inputs": [
        {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "b", "shape": [3], "datatype": "INT64", "data": [[1], [2], [3]]},  # nested data is allowed
        {"name": "c", "shape": [1], "datatype": "BOOL", "data": [True]},
        {"name": "d", "shape": [2], "datatype": "BYTES", "data": ["x", "yz"]},
    ]}, memoryview(b""))
    assert tensors["a"].dtype == np.float32 and tensors["a"].tolist() == [[1, 2], [3, 4]]
    assert tensors["b"].dtype == np.int64 and tensors["b"].tolist() == [1, 2, 3]
    assert tensors["c"].dtype == np.bool_ and tensors["d"].tolist() == [b"x", b"yz"]
    assert unchecked == ["a"]  # JSON numbers are finite, but FP32 may overflow to infinity
    assert raw == []


def test_binary_tensors_are_read_after_the_json_header() -> None:
    floats = np.array([[1.5, -2.0]], dtype=np.float32).tobytes()
    strings = b"".join(struct.pack("<I", len(s)) + s for s in (b"cat", b""))
    header = orjson.dumps({"inputs": [
        {"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": len(floats)}},
        {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(strings)}}]})
    request, binary = v2.split_body(header + floats + strings, str(len(header)))
    tensors, unchecked, raw = v2.decode_inputs(request, binary)
    assert tensors["x"].tolist() == [[1.5, -2.0]] and tensors["s"].tolist() == [b"cat", b""]
    assert unchecked == raw == ["x", "s"]


def test_a_request_decodes_to_the_cores_request_and_how_to_answer() -> None:
    body = orjson.dumps({"id": "r1", "parameters": {"top_k": 2, "binary_data_output": True}, "inputs": [
        {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
        {"name": "b", "shape": [1], "datatype": "INT8", "data": [3]}],
        "outputs": [{"name": "y"}, {"name": "z", "parameters": {"binary_data": False}}]})
    request, encoding = v2.decode(body, None)
    assert set(request.inputs) == {"a", "b"} and request.inputs["a"].dtype == np.float32
    assert (request.unchecked, request.raw, request.outputs) == ({"a"}, set(), {"y", "z"})
    assert request.parameters == {"top_k": 2, "binary_data_output": True}
    assert encoding == v2.Encoding("r1", {"y": None, "z": False}, binary=True)


@pytest.mark.parametrize("request_", [
    {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP64", "data": [1, 2.5, 3, 4, 5, -6e300]}]},
    {"id": "7", "inputs": [{"name": "x", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]}]},
    {"inputs": [{"name": "x", "shape": [1, 1, 2], "datatype": "FP64", "data": [0, 1]}]},
], ids=["rows", "with-id", "3-d"])
def test_the_one_pass_decoding_gives_what_the_general_one_gives(request_: dict) -> None:
    plain = v2.plain_request(request_)
    assert plain is not None
    general = v2.decode(orjson.dumps({**request_, "parameters": {}}), None)  # any other key: the general path
    for (req, enc), other in ((plain, general), (v2.decode(orjson.dumps(request_), None), general)):
        assert req.inputs.keys() == other[0].inputs.keys()
        for name, arr in req.inputs.items():
            assert arr.dtype == other[0].inputs[name].dtype == np.float64
            np.testing.assert_array_equal(arr, other[0].inputs[name], strict=True)
        assert (req.unchecked, req.raw, req.outputs, enc) == (other[0].unchecked, other[0].raw, other[0].outputs, other[1])


@pytest.mark.parametrize("request_", [
    {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1, True]}]},
    {"inputs": [{"name": "x", "shape": [3], "datatype": "FP64", "data": [1, 2]}]},
    {"inputs": [{"name": "x", "shape": [True, 2], "datatype": "FP64", "data": [1, 2]}]},
    {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]},
    {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [[1], [2]]}]},
    {"inputs": [{"name": "", "shape": [1], "datatype": "FP64", "data": [1]}]},
    {"id": 3, "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]},
], ids=["bool", "short", "bool-shape", "fp32", "nested", "no-name", "int-id"])
def test_anything_unusual_takes_the_general_path(request_: dict) -> None:
    assert v2.plain_request(request_) is None


class Recording:
    """A served model as the codec sees it: a name, a version and a handler, which records its request."""

    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self.name, self.version, self.outputs, self.requests = "m", "3", outputs, []

    async def infer(self, request: TensorRequest) -> dict[str, np.ndarray]:
        self.requests.append(request)
        return self.outputs


def test_infer_is_decode_the_models_handler_and_encode() -> None:
    model = Recording({"y": np.array([[1.0, 2.0]], dtype=np.float32), "label": np.array([b"cat"], dtype=object)})
    body = orjson.dumps({"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}],
                         "outputs": [{"name": "label"}]})
    reply = asyncio.run(v2.infer(model, None, body))  # type: ignore[arg-type]
    (request,) = model.requests
    assert request.inputs["s"].tolist() == [b"aGk="] and request.raw == set() and request.outputs == {"label"}
    assert orjson.loads(reply.body) == {"model_name": "m", "model_version": "3", "outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["cat"]}]}


@pytest.mark.parametrize(("request_", "binary", "message"), [
    ({"inputs": []}, b"", 'non-empty "inputs" list'),
    ({"inputs": [{"name": "x", "shape": [3], "datatype": "FP64", "data": [1, 2]}]}, b"", "'x'"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP128", "data": [1]}]}, b"", "datatype 'FP128'"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}, b"\0" * 4,
     "binary_data_size does not fit"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}}]}, b"\0\2",
     "each byte of its binary data must be 0 or 1"),
    ({"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]},
     struct.pack("<I", 9) + b"ab", "malformed BYTES data"),
    ({"id": 7, "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}, b"", '"id" must be a string'),
])
def test_bad_requests_are_invalid_input_naming_the_problem(request_: dict, binary: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        decode(request_, binary)


def test_a_header_length_beyond_the_body_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="does not fit the request body"):
        v2.split_body(b"{}", "3")


# -- v2 responses ------------------------------------------------------------------------------


def test_responses_are_json_or_binary_as_asked() -> None:
    model = SimpleNamespace(name="lin", version="1")
    outputs = {"predictions": np.array([1.5, 2.5]), "labels": np.array([b"a", b"bc"], dtype=object)}
    reply = v2.encode(model, v2.Encoding("r1"), outputs)  # type: ignore[arg-type]
    body = orjson.loads(reply.body)
    assert body == {"model_name": "lin", "model_version": "1", "id": "r1", "outputs": [
        {"name": "predictions", "datatype": "FP64", "shape": [2], "data": [1.5, 2.5]},
        {"name": "labels", "datatype": "BYTES", "shape": [2], "data": ["a", "bc"]}]}
    _, encoding = v2.decode(orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [0]}],
                                          "outputs": [{"name": "predictions", "parameters": {"binary_data": True}}]}), None)
    reply = v2.encode(model, encoding, outputs)  # type: ignore[arg-type]
    (length,) = (int(v) for k, v in reply.headers if k == b"inference-header-content-length")
    header, raw = orjson.loads(reply.body[:length]), reply.body[length:]
    assert header["outputs"] == [{"name": "predictions", "datatype": "FP64", "shape": [2],
                                  "parameters": {"binary_data_size": 16}}]
    assert np.frombuffer(raw, dtype=np.float64).tolist() == [1.5, 2.5]
    reply = v2.encode(model, v2.Encoding(binary=True), {"labels": outputs["labels"]})  # type: ignore[arg-type]
    assert reply.body.endswith(struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc")
    with pytest.raises(InvalidInputError, match="Unknown output 'scores'"):
        v2.encode(model, v2.Encoding(outputs={"scores": None}), outputs)  # type: ignore[arg-type]


# -- the served models' handlers of a decoded request ---------------------------------------------


@pytest.fixture(scope="module")
def served(model_store: ModelStore):
    models = load_models([ServeSpec.parse("lin"), ServeSpec.parse("forest")], model_store)
    yield models
    models.close()


def test_a_tabular_model_takes_rows_or_one_tensor_per_feature(served) -> None:
    lin, forest = served.get("lin"), served.get("forest")
    x = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, 0, 0, 1]])
    expected = lin.predictor.predict(x)
    rows = asyncio.run(lin.infer(TensorRequest({"anything": x})))
    np.testing.assert_allclose(rows["predictions"], expected)
    per_feature = {f: x[:, i].astype(np.float32) for i, f in enumerate(["a", "b", "c", "d"])}
    np.testing.assert_allclose(asyncio.run(lin.infer(TensorRequest(per_feature)))["predictions"], expected, rtol=1e-6)
    assert list(asyncio.run(forest.infer(TensorRequest({"input": x})))) == ["predictions"]  # probabilities only when asked
    both = asyncio.run(forest.infer(TensorRequest({"input": x}, outputs=frozenset({"probabilities"}))))
    np.testing.assert_allclose(both["probabilities"], forest.predictor.predict_proba(x))
    assert list(asyncio.run(lin.infer(TensorRequest({"input": x}, outputs=frozenset({"probabilities"}))))) == ["predictions"]
    nan = x.copy()
    nan[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN or infinite"):  # a tensor that may hold NaN is checked
        asyncio.run(lin.infer(TensorRequest({"input": nan}, unchecked=frozenset({"input"}))))
    with pytest.raises(InvalidInputError, match=r"Missing input\(s\) 'c', 'd'"):
        asyncio.run(lin.infer(TensorRequest({"a": x[:, 0], "b": x[:, 1]})))
    with pytest.raises(InvalidInputError, match=r"has shape \[2, 3\]; the model expects \[N, 4\]"):
        asyncio.run(lin.infer(TensorRequest({"input": x[:, :3]})))


def test_v2_metadata_comes_from_the_models_tensors(served) -> None:
    assert v2.model_metadata(served.get("forest")) == {
        "name": "forest", "versions": ["1"], "platform": "sklearn",
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [{"name": "predictions", "datatype": "BYTES", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]}]}


# -- the simple API's tabular schema ------------------------------------------------------------

SCHEMA = TabularSchema({"features": ["a", "b"], "classes": ["no", "yes"]})


def test_rows_come_as_lists_or_objects_and_one_row_or_many() -> None:
    x, single = SCHEMA.parse({"features": [1, 2.5]})
    assert single and x.tolist() == [[1.0, 2.5]] and x.dtype == np.float64
    x, single = SCHEMA.parse({"instances": [{"b": 2, "a": 1}, [3, 4]]})
    assert not single and x.tolist() == [[1, 2], [3, 4]]
    assert SCHEMA.probabilities(np.array([[0.25, 0.75]])) == [{"no": 0.25, "yes": 0.75}]


@pytest.mark.parametrize(("payload", "message"), [
    ([1, 2], "must be a JSON object"),
    ({"features": [1]}, "features has 1 values; the model expects 2 (a, b)"),
    ({"features": [1, True]}, "feature 'b' must be a number, got true"),
    ({"features": [1, None]}, "feature 'b' is null; this model does not accept missing values"),
    ({"features": {"a": 1, "c": 2}}, "missing 'b'; unknown 'c'"),
    ({"instances": []}, "non-empty list of rows"),
    ({"features": [1, 2], "instances": [[1, 2]]}, "not both"),
    ({"rows": [[1, 2]]}, 'Expected "features"'),
])
def test_bad_rows_name_the_feature_and_the_fix(payload, message: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        SCHEMA.parse(payload)
    assert message in str(e.value)


def test_nulls_are_nan_only_for_models_that_accept_missing_values() -> None:
    x, _ = TabularSchema({"features": ["a", "b"], "allow_nan": True}).parse({"features": [1, None]})
    assert x[0, 0] == 1 and np.isnan(x[0, 1])


# -- metrics: counted locally per request, flushed into prometheus-client --------------------------


def sample(name: str, model: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"model": model, "version": "1", **labels})


def test_requests_are_counted_locally_and_flushed_in_one_go() -> None:
    model = f"m-{uuid.uuid4().hex[:8]}"  # prometheus-client's registry is global: a name of its own
    metrics = ModelMetrics(model, "1")
    for code in (200, 200, 400):
        metrics.observe("simple", code, 0.004)
    metrics.add_rows(5)
    metrics.observe_batch(3)
    ok = {"protocol": "simple", "code": "200"}
    assert sample("modelport_requests_total", model, **ok) is None  # nothing reaches prometheus before a flush
    MetricsFlusher([metrics]).flush()
    assert sample("modelport_requests_total", model, **ok) == 2
    assert sample("modelport_request_errors_total", model, protocol="simple", code="400") == 1
    assert sample("modelport_request_errors_total", model, **ok) is None
    assert sample("modelport_predicted_rows_total", model) == 5
    MetricsFlusher([metrics]).flush()  # a second flush adds nothing new
    assert sample("modelport_requests_total", model, **ok) == 2
    body, content_type = MetricsFlusher([metrics]).render()
    assert content_type.startswith("text/plain") and f'model="{model}"'.encode() in body
