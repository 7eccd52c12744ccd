"""``train --in-container`` for real: an image built offline, the CSV read-only, the result in the host's store."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from modelport.errors import ModelportError
from tests.conftest import TEST_BASE_IMAGE

docker = pytest.importorskip("docker")

# Image builds and stack start-ups take minutes; on a busy machine far more than the suite's 600 s default.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def cleanup_training_images() -> Iterator[None]:
    """Remove the training images this module builds (the ones that were not there before)."""
    client = docker.from_env()
    before = {i.id for i in client.images.list(filters={"label": "io.modelport.role=train"})}
    yield
    for image in client.images.list(filters={"label": "io.modelport.role=train"}):
        if image.id not in before:
            client.images.remove(image.id, force=True)
    client.close()


@pytest.mark.parametrize("model", ["linear-regression", "random-forest"])
def test_metrics_and_predictions_equal_a_local_run(model: str, store, regression_csv, cleanup_training_images) -> None:
    from modelport.api import load_model
    from modelport.container.training import train_in_container
    from modelport.training.trainer import train

    path, x, _ = regression_csv
    local = train(path, "target", "local", model=model, seed=7, store=store)
    lines: list[str] = []
    boxed = train_in_container(path, "target", "boxed", model=model, seed=7, base_image=TEST_BASE_IMAGE, store=store,
                               progress=lines.append)
    assert any("Fitting" in line for line in lines)  # the container's own progress came through
    assert (boxed.n_train, boxed.n_test) == (local.n_train, local.n_test)
    assert boxed.metrics == pytest.approx(local.metrics, rel=1e-9)
    assert boxed.version.ref == "boxed:1"
    registered = store.resolve("boxed")
    assert registered.metrics == pytest.approx(local.metrics, rel=1e-9)
    assert registered.tags["model_type"] == model and registered.tags["data"] == path.name
    # The same coefficients; the host's OpenBLAS may pick another kernel (OPENBLAS_CORETYPE is set here, not in the
    # container), which changes the last bits of a matrix product: 2e-14 absolute was seen on a value of 0.011.
    np.testing.assert_allclose(load_model("boxed", store=store).predict(x), load_model("local", store=store).predict(x),
                               rtol=1e-9, atol=1e-12)


def test_errors_inside_the_container_reach_the_caller(store, regression_csv, cleanup_training_images) -> None:
    from modelport.container.training import train_in_container

    path, _, _ = regression_csv
    with pytest.raises(ModelportError, match="Target column 'nope' not found in data.csv"):
        train_in_container(path, "nope", "boxed", base_image=TEST_BASE_IMAGE, store=store)
    assert store.list_models() == []
    client = docker.from_env()
    assert client.containers.list(all=True, filters={"label": "io.modelport.role=train"}) == []
    client.close()

