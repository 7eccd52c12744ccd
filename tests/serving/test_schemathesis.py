"""schemathesis against the server's own OpenAPI document: every check, positive and negative data,
a fixed seed and a bounded number of examples, in-process (no socket). It must find nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from PIL import Image
from schemathesis.config import SchemathesisConfig
from schemathesis.schemas import BaseSchema

from modelport.serving.app import create_app
from modelport.serving.repository import Availability
from modelport.serving.runtime import ServeSpec, load_models
from modelport.store import ModelStore
from tests import fixtures_images
from tests.fixtures_serving import serve_in_process, small_models

mobilenet_onnx = fixtures_images.mobilenet_onnx

# Where JSON Schema cannot tell a valid request from one the server rightly refuses with a 400
# naming the problem, "schema-valid request accepted" is not checked; every other check still is.
NO_POSITIVE_CHECK = {"checks": {"positive_data_acceptance": {"enabled": False}}}


def config(*unexpressible: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        # 422 is the documented answer when the model itself produces NaN or infinity (a linear model
        # on inputs near 1e308): a valid request no input schema can rule out.
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]}},
        "operations": [{"include-path-regex": regex, **NO_POSITIVE_CHECK} for regex in unexpressible],
    })


# The protocol's generic InferenceRequest cannot say that a tensor's data has as many elements as its
# shape, or which inputs a model has.
V2_INFER = "/v2/models/[^/]+/infer$"
# An image upload is "binary": nothing in a schema says the bytes must decode as an image.
IMAGE_PREDICT = "/predict$"
EXAMPLES = settings(max_examples=15, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


class Served:
    """Models served in-process and the server's OpenAPI document, as schemathesis loads it."""

    def __init__(self, store: ModelStore, refs: list[str], *unexpressible: str) -> None:
        self.models = load_models([ServeSpec.parse(r) for r in refs], store)
        self.schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(self.models), config=config(*unexpressible))

    def call_and_validate(self, case) -> None:
        try:
            case.call_and_validate()
        finally:  # each example starts with every model loaded, whatever unload an earlier one sent
            self.models.availability = Availability()


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    store = small_models(tmp_path_factory.mktemp("schemathesis") / "home")
    yield Served(store, ["lin", "forest"], V2_INFER)
    store.close()


@pytest.fixture(scope="module")
def tabular_api(tabular: Served) -> BaseSchema:
    return tabular.schema


@pytest.fixture(scope="module")
def image(mobilenet_onnx: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from modelport.images.register import import_image_classifier

    store = ModelStore(tmp_path_factory.mktemp("schemathesis-image") / "home")
    onnx_path, labels = mobilenet_onnx
    import_image_classifier("mnv2", onnx_path, labels=labels, store=store)
    yield Served(store, ["mnv2"], V2_INFER, IMAGE_PREDICT)
    store.close()


@pytest.fixture(scope="module")
def image_api(image: Served) -> BaseSchema:
    return image.schema


@schemathesis.pytest.from_fixture("tabular_api").parametrize()
@EXAMPLES
def test_tabular_models_conform_to_their_openapi_document(case, tabular: Served) -> None:
    tabular.call_and_validate(case)


@schemathesis.pytest.from_fixture("image_api").parametrize()
@EXAMPLES
def test_image_model_conforms_to_its_openapi_document(case, image: Served) -> None:
    image.call_and_validate(case)


def test_sequences_of_calls_follow_the_documents_links(tabular: Served) -> None:
    """Stateful: unload, load, readiness and the index in the orders the links allow, every check
    on every response (an unloaded model must say it is not ready; loading it again must bring it back)."""
    machine = tabular.schema.as_state_machine()
    try:
        run_state_machine_as_test(machine, settings=settings(max_examples=10, stateful_step_count=5, derandomize=True,
                                                             deadline=None, database=None))
    finally:
        tabular.models.availability = Availability()


# -- what schemathesis found, each pinned down ------------------------------------------------------

def _request_schema(client, path: str) -> dict:
    return client.get("/openapi.json").json()["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def test_a_regressor_documents_and_refuses_probabilities(app_client) -> None:
    schema = _request_schema(app_client, "/models/lin/predict")
    assert not jsonschema_rs.validator_for(schema).is_valid({"features": [0, 0, 0, 0], "probabilities": True})
    r = app_client.post("/models/lin/predict", json={"features": [0, 0, 0, 0], "probabilities": True})
    assert r.status_code == 400 and "no class probabilities" in r.json()["error"]
    forest = _request_schema(app_client, "/models/forest/predict")
    assert jsonschema_rs.validator_for(forest).is_valid({"features": [0, 0, 0, 0], "probabilities": True})


def test_features_and_instances_together_are_invalid_in_the_document_too(app_client) -> None:
    # The first oneOf branch used to accept any "instances" beside "features" (the server refuses both).
    body = {"features": [0, 0, 0, 0], "instances": 1}
    assert not jsonschema_rs.validator_for(_request_schema(app_client, "/predict")).is_valid(body)
    assert app_client.post("/predict", json=body).status_code == 400


def test_a_float32_model_documents_the_range_it_takes(app_client) -> None:
    schema = _request_schema(app_client, "/models/forest/predict")
    validator = jsonschema_rs.validator_for(schema)
    assert validator.is_valid({"features": [3.4e38, 0, 0, 0]}) and not validator.is_valid({"features": [1e39, 0, 0, 0]})
    assert app_client.post("/models/forest/predict", json={"features": [1e39, 0, 0, 0]}).status_code == 400
    assert jsonschema_rs.validator_for(_request_schema(app_client, "/models/lin/predict")).is_valid({"features": [1e300, 0, 0, 0]})


def test_a_bad_top_k_in_the_query_is_refused_even_beside_a_form_field(tmp_path) -> None:
    from modelport.images.register import import_image_classifier

    store = ModelStore(tmp_path / "home")
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\n")
    import_image_classifier("tiny", fixtures_images.tiny_onnx(tmp_path / "m.onnx"), labels=tmp_path / "labels.txt",
                            preprocess={"resize": 32, "crop": 32}, store=store)
    client, _ = serve_in_process(store, ["tiny"])
    png = fixtures_images.encode(Image.new("RGB", (8, 8)), "PNG")
    r = client.post("/predict?top_k=0", files={"image": ("x.png", png)}, data={"top_k": "3"})
    assert r.status_code == 400 and r.json()["error"] == "top_k must be a positive integer (at most 4), got '0'"
    r = client.post("/predict?top_k=1", files={"image": ("x.png", png)}, data={"top_k": "3"})  # the form field wins
    assert r.status_code == 200 and len(r.json()["prediction"]) == 3
    store.close()
