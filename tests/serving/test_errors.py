"""Whose fault an error is: a model that raises on valid input is a 5xx naming the model (and counted
as an error), a request the model cannot take is a 4xx. In-process: real, deliberately broken models."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, RidgeClassifier
from sklearn.tree import DecisionTreeClassifier
from starlette.testclient import TestClient

import modelport
from modelport.serving.batching import BatchConfig
from modelport.store import ModelStore
from tests.fixtures_serving import FEATURES, serve_in_process

ROW = [0.1, 0.2, 0.3, 0.4]


def pair_onnx() -> bytes:
    """``a + b``, both [-1, 2] with batch sizes of their own: a request with different ones passes the
    signature's check (-1 is any size) and then fails inside onnxruntime, as a model exported carelessly does."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["sum"])], "pair",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, ["M", 2])],
                              [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def broken_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStore]:
    import onnx

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    store = ModelStore(tmp_path_factory.mktemp("errors") / "home")
    lin = LinearRegression().fit(x, x @ [1.0, 2.0, 3.0, 4.0])
    lin.coef_ = np.ones(3)  # 3 weights for 4 features: every prediction fails in the matrix product
    modelport.save_model(lin, "broken", feature_names=FEATURES, store=store)
    tree = DecisionTreeClassifier(max_depth=2, random_state=0).fit(x, np.where(x[:, 0] > 0, "yes", "no"))
    tree.n_classes_ = np.float64(2.0)  # predicts, but its probabilities fail (a float cannot slice)
    modelport.save_model(tree, "tree", feature_names=FEATURES, store=store)
    ridge = RidgeClassifier().fit(x, np.where(x[:, 1] > 0, "yes", "no"))  # a classifier without probabilities
    modelport.save_model(ridge, "ridge", feature_names=FEATURES, store=store)
    modelport.save_model(onnx.load_from_string(pair_onnx()), "pair", store=store)
    yield store
    store.close()


@pytest.fixture(scope="module", params=[None, BatchConfig(max_batch_size=8)], ids=["inline", "batched"])
def client(request: pytest.FixtureRequest, broken_store: ModelStore) -> Iterator[TestClient]:
    test_client, _ = serve_in_process(broken_store, ["broken", "tree", "ridge", "pair"], request.param)
    with test_client:
        yield test_client


def errors(client: TestClient, model: str, protocol: str, code: int) -> float:
    pattern = (rf'modelport_request_errors_total\{{code="{code}",model="{model}",protocol="{protocol}",version="1"\}} '
               r"([\d.e+]+)")
    found = re.search(pattern, client.get("/metrics").text)
    return float(found.group(1)) if found else 0.0


def test_a_model_that_raises_while_predicting_is_a_500_naming_it(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    before = {p: errors(client, "broken", p, 500) for p in ("simple", "v2")}
    with caplog.at_level(logging.ERROR, "modelport.server"):
        r = client.post("/predict", json={"features": ROW})
    assert r.status_code == 500
    assert r.json()["error"].startswith("Model 'broken' failed to predict: ValueError: matmul")
    assert r.headers["x-model"] == "broken"
    # The server log has the model's own traceback: the cause, not just the message.
    (record,) = [rec for rec in caplog.records if rec.getMessage().startswith("prediction failed")]
    assert record.model == "broken" and isinstance(record.exc_info[1].__cause__, ValueError)
    for body in ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW}]},  # the fast path
                 {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}):  # the general one
        r = client.post("/v2/models/broken/infer", json=body)
        assert r.status_code == 500 and r.json()["error"].startswith("Model 'broken' failed to predict: ValueError")
    assert errors(client, "broken", "simple", 500) == before["simple"] + 1
    assert errors(client, "broken", "v2", 500) == before["v2"] + 2


def test_a_bad_request_to_the_same_model_is_still_a_400(client: TestClient) -> None:
    """The request is checked before the model runs: what the client sent wrong is the client's to fix."""
    before = {code: errors(client, "broken", "simple", code) for code in (400, 500)}
    r = client.post("/predict", json={"features": ROW[:3]})
    assert r.status_code == 400 and "has 3 values; the model expects 4" in r.json()["error"]
    r = client.post("/predict", json={"features": [1, 2, "x", 4]})
    assert r.status_code == 400 and "feature 'c' must be a number" in r.json()["error"]
    assert errors(client, "broken", "simple", 400) == before[400] + 2
    assert errors(client, "broken", "simple", 500) == before[500]


def test_probabilities_that_fail_are_a_500_and_a_model_without_them_a_400(client: TestClient) -> None:
    assert client.post("/models/tree/predict", json={"features": ROW}).json() == {"prediction": "yes"}
    r = client.post("/models/tree/predict", json={"features": ROW, "probabilities": True})
    assert r.status_code == 500
    assert r.json()["error"].startswith("Model 'tree' failed to give probabilities: TypeError: slice indices")
    v2 = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW}],
          "outputs": [{"name": "predictions"}, {"name": "probabilities"}]}
    r = client.post("/v2/models/tree/infer", json=v2)
    assert r.status_code == 500 and "failed to give probabilities" in r.json()["error"]
    # Asking a classifier that has no probabilities for them is the request's mistake.
    r = client.post("/models/ridge/predict", json={"features": ROW, "probabilities": True})
    assert r.status_code == 400
    assert r.json()["error"] == "Model 'ridge' cannot give probabilities: RidgeClassifier does not give probabilities"


def test_a_tensor_model_that_fails_to_run_is_a_500_and_wrong_inputs_a_400(client: TestClient) -> None:
    def infer(a_rows: int, b_rows: int, names: tuple[str, str] = ("a", "b")):
        return client.post("/v2/models/pair/infer", json={"inputs": [
            {"name": names[0], "shape": [a_rows, 2], "datatype": "FP32", "data": [1.0] * (2 * a_rows)},
            {"name": names[1], "shape": [b_rows, 2], "datatype": "FP32", "data": [2.0] * (2 * b_rows)}]})

    r = infer(2, 2)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [3.0] * 4
    before = errors(client, "pair", "v2", 500)
    r = infer(2, 3)  # fits the signature ([-1, 2] each); onnxruntime cannot broadcast 2 rows with 3
    assert r.status_code == 500
    assert r.json()["error"].startswith("Model 'pair' failed to run: ")
    assert errors(client, "pair", "v2", 500) == before + 1
    r = infer(2, 2, ("a", "c"))
    assert r.status_code == 400 and r.json()["error"] == "The model's inputs are a, b; missing b"
    assert client.post("/v2/models/pair/infer", json={"inputs": [
        {"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
        {"name": "b", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}).status_code == 400
    assert infer(1, 1).status_code == 200  # the failure was that request's: the model serves the next one


def test_unknown_and_unloaded_models_are_4xx_on_every_endpoint(client: TestClient) -> None:
    for path in ("/models/nope/predict", "/v2/models/nope/infer", "/v2/models/broken/versions/9/infer"):
        r = client.post(path, json={"features": ROW})
        assert r.status_code == 404 and "is not served here" in r.json()["error"]
    r = client.get("/v2/models/nope")
    assert r.status_code == 404 and r.json()["error"].startswith("Model 'nope' is not served here")
    r = client.post("/v2/repository/models/nope/load")
    assert r.status_code == 404 and "add it to `modelport serve`" in r.json()["error"]
    assert client.post("/v2/repository/models/tree/unload").status_code == 200
    try:
        r = client.post("/models/tree/predict", json={"features": ROW})
        assert r.status_code == 400 and r.json()["error"].startswith("Model 'tree' is unloaded")
    finally:
        assert client.post("/v2/repository/models/tree/load").status_code == 200
    r = client.post("/v2/repository/index", content=b"{nope")
    assert r.status_code == 400 and r.json()["error"].startswith("Malformed JSON")
