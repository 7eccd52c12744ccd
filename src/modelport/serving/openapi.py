"""OpenAPI document built from each served model's signature, and a Swagger UI that works offline."""

from __future__ import annotations

from typing import Any

from modelport import __version__
from modelport.serving.runtime import ModelSet, ServedModel
from modelport.serving.v2 import DATATYPES

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_NON_FINITE = {"description": "The model produced NaN or infinity for this input: no prediction",
               "content": {"application/json": {"schema": _ERROR}}}


def _tabular_request(model: ServedModel) -> dict[str, Any]:
    assert model.schema is not None
    names = model.schema.features
    number: dict[str, Any] = {"type": "number"} if not model.schema.allow_nan else {"type": ["number", "null"]}
    limit = model.predictor.input_limit
    if limit is not None:  # the model computes in float32: larger values are refused with a 400
        number = {**number, "minimum": -limit, "maximum": limit}
    row_list = {"type": "array", "items": number, "minItems": len(names), "maxItems": len(names),
                "description": "Feature values in this order: " + ", ".join(names)}
    row_obj = {"type": "object", "properties": {n: number for n in names}, "required": names, "additionalProperties": False}
    row = {"oneOf": [row_list, row_obj]}
    # Only a classifier has class probabilities: a regressor refuses "probabilities": true with a 400.
    probabilities = {"type": "boolean"} if model.schema.classes is not None else {
        "type": "boolean", "enum": [False], "description": "A regression model has no class probabilities"}
    return {
        "oneOf": [
            # One of the two keys, never both: the server refuses a body with both with a 400.
            {"type": "object", "properties": {"features": row, "probabilities": probabilities}, "required": ["features"],
             "not": {"required": ["instances"]}},
            {"type": "object", "properties": {"instances": {"type": "array", "items": row, "minItems": 1},
                                              "probabilities": probabilities}, "required": ["instances"],
             "not": {"required": ["features"]}},
        ],
        "example": {"features": [0.0] * len(names)},
    }


def _predict_operation(model: ServedModel) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    if model.task == "image-classification":
        top_k = {"type": "integer", "minimum": 1, "default": 3, "description": "How many classes to return, best first"}
        body = {"content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "image": {"type": "string", "format": "binary", "description": "JPEG, PNG, GIF, WebP, BMP or TIFF"},
                "top_k": top_k}, "required": ["image"]}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        }}
        params = [{"name": "top_k", "in": "query", "required": False, "schema": top_k}]
        result = {"type": "object", "required": ["prediction"], "properties": {"prediction": {"type": "array", "items": {
            "type": "object", "required": ["class", "confidence"],
            "properties": {"class": {"type": "string"}, "confidence": {"type": "number", "minimum": 0, "maximum": 1}}}}},
            "example": {"prediction": [{"class": "Egyptian cat", "confidence": 0.67}, {"class": "tabby", "confidence": 0.16},
                                       {"class": "tiger cat", "confidence": 0.14}]}}
    elif model.schema is not None:
        body = {"content": {"application/json": {"schema": _tabular_request(model)}}}
        result = {"type": "object", "properties": {"prediction": {}, "predictions": {"type": "array"}, "probabilities": {}}}
    else:
        return {}
    return {
        "summary": f"Predict with {model.name} v{model.version} ({model.info.framework}, {model.task})",
        "description": model.info.description,
        **({"parameters": params} if params else {}),
        "requestBody": {"required": True, **body},
        "responses": {
            "200": {"description": "Prediction", "content": {"application/json": {"schema": result}}},
            "400": {"description": "Invalid input", "content": {"application/json": {"schema": _ERROR}}},
            "413": {"description": "Body too large", "content": {"application/json": {"schema": _ERROR}}},
            "415": {"description": "A Content-Encoding other than gzip or deflate",
                    "content": {"application/json": {"schema": _ERROR}}},
            "422": _NON_FINITE,
        },
    }


def build_spec(models: ModelSet) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    default = _predict_operation(models.default)
    if default:
        paths["/predict"] = {"post": {**default, "operationId": "predict"}}
    for m in models.latest.values():
        op = _predict_operation(m)
        if op:
            paths[f"/models/{m.name}/predict"] = {"post": {**op, "operationId": f"predict_{m.name}"}}
        paths[f"/v2/models/{m.name}/infer"] = {"post": {
            "summary": f"Open Inference Protocol v2 inference with {m.name}",
            "operationId": f"v2_infer_{m.name}",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}}},
            "responses": {"200": {"description": "Inference response"},
                          "400": {"description": "Invalid input", "content": {"application/json": {"schema": _ERROR}}},
                          "422": _NON_FINITE},
        }}
    for path, summary in [("/v2/health/live", "Liveness"), ("/v2/health/ready", "Readiness"), ("/metrics", "Prometheus metrics"),
                          ("/health", "Health"), ("/models", "Served models")]:
        paths[path] = {"get": {"summary": summary, "responses": {"200": {"description": "OK"}}}}
    paths.update(_repository_paths(models))
    tensor = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
        "name": {"type": "string", "minLength": 1}, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": list(DATATYPES)}, "data": {"type": "array"}, "parameters": {"type": "object"}}}
    output = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1},
        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "modelport inference server", "version": __version__,
                 "description": "Served models: " + ", ".join(f"{m.name} v{m.version}" for m in models)},
        "paths": paths,
        "components": {"schemas": {"InferenceRequest": {"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"}, "inputs": {"type": "array", "items": tensor, "minItems": 1},
            "outputs": {"type": "array", "items": output},
            "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}}}}}},
    }


def _repository_paths(models: ModelSet) -> dict[str, Any]:
    """The model repository extension, and model readiness, which unload and load change. Links say
    so (a client, or schemathesis' stateful testing, follows them from one call to the next)."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": list(models.by_name)}}
    same_model = {"parameters": {"name": "$request.path.name"}}
    state = {"type": "object", "required": ["name", "ready"], "properties": {
        "name": {"type": "string"}, "ready": {"type": "boolean"}, "error": {"type": "string"}}}
    changed = {"description": "Done (also when the model already was in that state)",
               "content": {"application/json": {"schema": {"type": "object"}}}}
    not_served = {"description": "Not a model this server was started with",
                  "content": {"application/json": {"schema": _ERROR}}}
    bad = {"description": "Malformed body or unsupported parameters", "content": {"application/json": {"schema": _ERROR}}}
    options = {"type": "object", "properties": {"parameters": {"type": ["object", "null"], "maxProperties": 0}}}
    unload_options = {"type": "object", "properties": {"parameters": {"type": ["object", "null"], "properties": {
        "unload_dependents": {"type": "boolean"}}, "additionalProperties": False}}}
    return {
        "/v2/repository/index": {"post": {
            "summary": "The served models and their state (READY, or UNAVAILABLE once unloaded)",
            "operationId": "repository_index",
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"ready": {"type": "boolean", "description": "Only the READY ones"}}}}}},
            "responses": {"200": {"description": "One entry per served model version", "content": {"application/json": {
                "schema": {"type": "array", "items": {"type": "object", "required": ["name", "version", "state", "reason"],
                           "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                          "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
                                          "reason": {"type": "string"}}}}}}},
                          "400": bad},
        }},
        "/v2/repository/models/{name}/load": {"post": {
            "summary": "Serve an unloaded model again (the same artifacts; not another model from the store)",
            "operationId": "repository_load", "parameters": [name],
            "requestBody": {"required": False, "content": {"application/json": {"schema": options}}},
            "responses": {"200": {**changed, "links": {"ModelReady": {"operationId": "v2_model_ready", **same_model},
                                                      "Unload": {"operationId": "repository_unload", **same_model}}},
                          "400": bad, "404": not_served},
        }},
        "/v2/repository/models/{name}/unload": {"post": {
            "summary": "Stop serving a model: not ready, predictions refused with a 400, until it is loaded again",
            "operationId": "repository_unload", "parameters": [name],
            "requestBody": {"required": False, "content": {"application/json": {"schema": unload_options}}},
            "responses": {"200": {**changed, "links": {"ModelReady": {"operationId": "v2_model_ready", **same_model},
                                                      "Load": {"operationId": "repository_load", **same_model}}},
                          "400": bad, "404": not_served},
        }},
        "/v2/models/{name}/ready": {"get": {
            "summary": "Whether a model is ready: 200 if so, 400 once unloaded",
            "operationId": "v2_model_ready", "parameters": [name],
            "responses": {"200": {"description": "Ready", "content": {"application/json": {"schema": state}}},
                          "400": {"description": "Unloaded", "content": {"application/json": {"schema": state}}},
                          "404": not_served},
        }},
    }
