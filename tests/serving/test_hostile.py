"""Hostile and type-confused requests, in-process: each is a clear 4xx naming what is wrong, never a 500."""

from __future__ import annotations

import json
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
