"""What the stack tests share: the database image they run and how they leave the engine clean."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

POSTGRES_IMAGE = os.environ.get("MODELPORT_TEST_POSTGRES_IMAGE", "modelport-test/postgres:15")


def remove_everything(client, name: str) -> None:
    for label in (f"io.modelport.stack={name}", f"com.docker.compose.project={name}"):
        for c in client.containers.list(all=True, filters={"label": label}):
            c.remove(force=True, v=True)
    for label in (f"io.modelport.stack={name}", f"com.docker.compose.project={name}"):
        for net in client.networks.list(filters={"label": label}):
            net.remove()
        for volume in client.volumes.list(filters={"label": label}):
            volume.remove(force=True)
    remove_images(client, {"label": f"io.modelport.stack={name}"})


def remove_images(client, filters: dict[str, str]) -> None:
    """The images ``filters`` lists, but one a running container uses: the control and gateway images are
    content-addressed, so a Compose stack test running beside this one may be serving from the same image
    (its own teardown removes it)."""
    import docker.errors

    for image in client.images.list(filters=filters):
        try:
            client.images.remove(image.id, force=True)
        except docker.errors.APIError as e:
            if e.status_code != 409:
                raise


def expected(stack: Any, ref: str, x: np.ndarray) -> np.ndarray:
    """What the model ``ref`` in the stack's store (``stack.env``'s MODELPORT_HOME) predicts for ``x``."""
    from modelport.api import load_model
    from modelport.store import ModelStore

    store = ModelStore(Path(stack.env["MODELPORT_HOME"]))
    try:
        return load_model(ref, store=store).predict(x)
    finally:
        store.close()
