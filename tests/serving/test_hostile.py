"""Hostile and type-confused requests, in-process: each is a clear 4xx naming what is wrong, never a 500."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from starlette.testclient import TestClient

INPUT = {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}


def with_input(**changes: Any) -> dict[str, Any]:
    return {"inputs": [{**INPUT, **changes}]}


V2_MALFORMED = [
    # datatype: a string naming a v2 type
    (with_input(datatype={}), "datatype {}"),
    (with_input(datatype=[]), "datatype []"),
    (with_input(datatype=["FP64"]), "datatype ['FP64']"),
    (with_input(datatype=None), "datatype None"),
    (with_input(datatype=64), "datatype 64"),
    # outputs: a list of objects, each with a string name and an object of parameters
    ({**with_input(), "outputs": 5}, '"outputs" must be a list'),
    ({**with_input(), "outputs": {}}, '"outputs" must be a list'),
    ({**with_input(), "outputs": "predictions"}, '"outputs" must be a list'),
    ({**with_input(), "outputs": 0}, '"outputs" must be a list'),
    ({**with_input(), "outputs": [5]}, "outputs[0] must be an object"),
    ({**with_input(), "outputs": [{"name": [1]}]}, 'outputs[0]: "name" must be a non-empty string'),
    ({**with_input(), "outputs": [{"name": {}}]}, 'outputs[0]: "name" must be a non-empty string'),
    ({**with_input(), "outputs": [{}]}, 'outputs[0]: "name" must be a non-empty string'),
    ({**with_input(), "outputs": [{"name": "predictions"}, {"name": 1}]}, 'outputs[1]: "name"'),
    ({**with_input(), "outputs": [{"name": "predictions", "parameters": [1]}]}, 'outputs[0]: "parameters" must be a JSON object'),
    ({**with_input(), "outputs": [{"name": "predictions", "parameters": "x"}]}, 'outputs[0]: "parameters" must be a JSON object'),
    ({**with_input(), "outputs": [{"name": "predictions", "parameters": {"binary_data": "yes"}}]},
     'outputs[0]: parameter "binary_data" must be true or false'),
    # parameters: an object, at the request, input and output level
    ({**with_input(), "parameters": [1]}, '"parameters" must be a JSON object, got a list'),
    ({**with_input(), "parameters": 1}, '"parameters" must be a JSON object, got a number'),
    ({**with_input(), "parameters": "binary_data_output"}, '"parameters" must be a JSON object'),
    ({**with_input(), "parameters": {"binary_data_output": 1}}, 'parameter "binary_data_output" must be true or false'),
    (with_input(parameters=[1]), "Input 'input': \"parameters\" must be a JSON object"),
    (with_input(parameters=True), "Input 'input': \"parameters\" must be a JSON object"),
    (with_input(parameters={"binary_data_size": True}), "binary_data_size does not fit"),
    (with_input(parameters={"binary_data_size": "32"}), "binary_data_size does not fit"),
    # the rest of an input
    (with_input(name=["input"]), "inputs[0] has no name"),
    (with_input(shape={"rows": 1}), "needs a shape"),
    (with_input(data={"a": 1}), "not FP64 numbers"),
    (with_input(data="1,2,3,4"), "not FP64 numbers"),
    ({"inputs": {"input": INPUT}}, 'non-empty "inputs" list'),
    ({"inputs": [INPUT, 5]}, "inputs[1] must be an object"),
]


@pytest.mark.parametrize(("body", "message"), V2_MALFORMED)
def test_v2_malformed_fields_are_a_400_naming_the_field(app_client: TestClient, body: dict, message: str) -> None:
    r = app_client.post("/v2/models/lin/infer", content=json.dumps(body))
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


@pytest.mark.parametrize("length", ["²", "١٢", "-1", "1e2", " 10", "", "99999"])
def test_v2_inference_header_length_that_is_not_a_decimal_fitting_the_body(app_client: TestClient, length: str) -> None:
    r = app_client.post("/v2/models/lin/infer", content=json.dumps(with_input()),
                        headers={"inference-header-content-length": length.encode()})  # type: ignore[dict-item]
    assert r.status_code == 400
    assert r.json()["error"] == "Inference-Header-Content-Length does not fit the request body"


def test_v2_well_formed_neighbours_still_answer(app_client: TestClient) -> None:
    for body in [{**with_input(), "outputs": []}, {**with_input(), "parameters": None},
                 {**with_input(), "outputs": [{"name": "predictions", "parameters": {"binary_data": False}}]},
                 with_input(parameters={})]:
        r = app_client.post("/v2/models/lin/infer", content=json.dumps(body))
        assert r.status_code == 200, (body, r.text)
        assert r.json()["outputs"][0]["name"] == "predictions"


# -- numbers -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("datatype", "data", "allowed"), [
    ("INT8", [1.7, 1, 1, 1], "whole numbers"),
    ("INT32", [1, 2, 3, 4.5], "whole numbers"),
    ("UINT8", [1, 2, 3, 2.5], "whole numbers"),
    ("INT64", [[1, 2], [3, 0.1]], "whole numbers"),
    ("BOOL", [2, 1, 1, 1], "true, false, 0 or 1"),
    ("BOOL", [True, False, 0.5, True], "true, false, 0 or 1"),
])
def test_v2_values_that_do_not_fit_the_datatype_are_refused(app_client: TestClient, datatype: str, data: list,
                                                            allowed: str) -> None:
    r = app_client.post("/v2/models/lin/infer", json=with_input(datatype=datatype, data=data))
    assert r.status_code == 400
    assert r.json()["error"] == f"Input 'input' has values that do not fit {datatype} ({allowed})"


def test_v2_values_that_fit_the_datatype_are_kept(app_client: TestClient) -> None:
    expected = app_client.post("/predict", json={"features": [1, 0, 1, 2]}).json()["prediction"]
    for datatype, data in [("INT8", [1, 0, 1, 2]), ("INT8", [1.0, 0.0, 1.0, 2.0]), ("UINT16", [1, 0, 1, 2])]:
        r = app_client.post("/v2/models/lin/infer", json=with_input(datatype=datatype, data=data))
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [expected]
    r = app_client.post("/v2/models/lin/infer", json=with_input(datatype="BOOL", data=[True, False, 1, 0]))
    assert r.json()["outputs"][0]["data"] == [app_client.post("/predict", json={"features": [1, 0, 1, 0]}).json()["prediction"]]


def test_v2_binary_bool_bytes_other_than_0_and_1_are_refused(app_client: TestClient) -> None:
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BOOL",
                                     "parameters": {"binary_data_size": 4}}]}).encode()
    r = app_client.post("/v2/models/lin/infer", content=header + bytes([1, 0, 2, 1]),
                        headers={"inference-header-content-length": str(len(header))})
    assert r.status_code == 400 and "each byte of its binary data must be 0 or 1" in r.json()["error"]


def test_values_beyond_float32_to_a_model_that_computes_in_float32_are_a_400(app_client: TestClient) -> None:
    r = app_client.post("/models/forest/predict", json={"features": [0, 0, -1e39, 0]})
    assert r.status_code == 400
    assert r.json()["error"] == ("Row 0: feature 'c' is -1e+39, beyond what model 'forest' takes: "
                                 "it computes in float32, whose largest value is 3.403e+38")
    r = app_client.post("/v2/models/forest/infer", json=with_input(data=[0, 1e39, 0, 0]))
    assert r.status_code == 400 and "feature 'b' is 1e+39" in r.json()["error"]
    # float32's own largest value is fine, and so is a model that computes in float64
    assert app_client.post("/models/forest/predict", json={"features": [3.4e38, 0, 0, 0]}).status_code == 200
    assert app_client.post("/predict", json={"features": [1e39, 0, 0, 0]}).status_code == 200


def _errors(app_client: TestClient, protocol: str, code: int) -> float:
    pattern = (rf'modelport_request_errors_total\{{code="{code}",model="lin",protocol="{protocol}",version="1"\}} '
               r"([\d.e+]+)")
    found = re.search(pattern, app_client.get("/metrics").text)
    return float(found.group(1)) if found else 0.0


def test_a_non_finite_prediction_is_an_error_counted_in_metrics(app_client: TestClient) -> None:
    before = {p: _errors(app_client, p, 422) for p in ("simple", "v2")}
    r = app_client.post("/predict", json={"features": [1e308] * 4})
    assert r.status_code == 422
    assert r.json()["error"].startswith("Model 'lin' produced a non-finite value (NaN or infinity) as its prediction")
    r = app_client.post("/v2/models/lin/infer", json=with_input(data=[1e308] * 4))
    assert r.status_code == 422 and "non-finite value" in r.json()["error"]
    r = app_client.post("/v2/models/lin/infer", json={**with_input(data=[1e308] * 4), "parameters": {}})  # general path
    assert r.status_code == 422
    assert _errors(app_client, "simple", 422) == before["simple"] + 1
    assert _errors(app_client, "v2", 422) == before["v2"] + 2
