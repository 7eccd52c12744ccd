"""Port conflicts are found before any build or container start, with a message naming the port,
what holds it and the option that changes it (issue 12 item 8)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TEST_BASE_IMAGE
from tests.helpers import free_port, run_cli

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A store with one model (no image of it built), and cleanup of whatever a test left on the engine."""
    import docker
    import pandas as pd

    tmp = tmp_path_factory.mktemp("ports")
    name = f"pt-{uuid.uuid4().hex[:6]}"
    env = {"MODELPORT_HOME": str(tmp / "home")}
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(50, 3)), columns=["a", "b", "c"])
    frame["target"] = frame.sum(axis=1)
    frame.to_csv(tmp / "data.csv", index=False)
    run_cli("train", "--data", str(tmp / "data.csv"), "--target", "target", "--name", name, env=env)
    client = docker.from_env()
    yield {"env": env, "name": name, "tmp": tmp, "client": client}
    for label in (f"io.modelport.service={name}", f"com.docker.compose.project={name}", f"io.modelport.stack={name}"):
        for c in client.containers.list(all=True, filters={"label": label}):
            c.remove(force=True)
    for image in client.images.list(name=f"modelport/{name}"):
        client.images.remove(image.id, force=True)
    client.close()


def _held(host: str) -> socket.socket:
    s = socket.socket()
    s.bind((host, 0))
    s.listen()
    return s


def _nothing_created(env: dict) -> None:
    client, name = env["client"], env["name"]
    for label in (f"io.modelport.service={name}", f"com.docker.compose.project={name}", f"io.modelport.stack={name}"):
        assert client.containers.list(all=True, filters={"label": label}) == []
    assert client.images.list(name=f"modelport/{name}") == []


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_run_on_a_taken_port_fails_before_building_or_starting_anything(env: dict, host: str) -> None:
    with _held(host) as held:
        port = held.getsockname()[1]
        started = time.monotonic()
        proc = run_cli("run", env["name"], "--port", str(port), "--base-image", TEST_BASE_IMAGE, env=env["env"],
                       check=False, timeout=60)
        elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"Cannot listen on 127.0.0.1:{port}: port {port} is already in use by another process" in proc.stderr
    assert "--port" in proc.stderr and "Traceback" not in proc.stderr
    assert elapsed < 15, f"took {elapsed:.1f}s"
    _nothing_created(env)


def _write_stack(env: dict, port: int) -> Path:
    """A stack's files as `stack init` writes them (its build contexts aside: up must not get that far)."""
    from modelport.deploy.stack import ModelService, Stack, StackState
    from modelport.store import ModelStore

    store = ModelStore(Path(env["env"]["MODELPORT_HOME"]))
    try:
        mv = store.resolve(env["name"])
    finally:
        store.close()
    directory = env["tmp"] / f"stack-{port}"
    directory.mkdir()
    state = StackState(name=env["name"], db_image="postgres:16", base_image=TEST_BASE_IMAGE,
                       gateway_image="modelport/gateway:none", gateway_host="127.0.0.1", gateway_port=port,
                       control_image="modelport/control:none", models=[ModelService.of(mv)])
    Stack(directory, state).save()
    return directory


def test_stack_up_on_a_port_held_by_a_process_fails_before_building_or_starting_anything(env: dict) -> None:
    with _held("0.0.0.0") as held:
        port = held.getsockname()[1]
        directory = _write_stack(env, port)
        proc = run_cli("stack", "up", "--dir", str(directory), env=env["env"], check=False, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"port {port} is already in use by another process" in proc.stderr, proc.stderr
    assert "--gateway-port" in proc.stderr and "Traceback" not in proc.stderr
    _nothing_created(env)


def test_stack_up_on_a_port_a_container_publishes_names_the_container(env: dict) -> None:
    port = free_port()
    holder = env["client"].containers.run(TEST_BASE_IMAGE, ["sleep", "300"], detach=True, name=f"{env['name']}-holder",
                                          ports={"9000/tcp": ("127.0.0.1", port)})
    try:
        directory = _write_stack(env, port)
        proc = run_cli("stack", "up", "--dir", str(directory), env=env["env"], check=False, timeout=60)
    finally:
        holder.remove(force=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"port {port} is already in use by the container {env['name']}-holder" in proc.stderr, proc.stderr
    _nothing_created(env)


def test_stack_up_gateway_port_is_checked_before_it_is_saved(env: dict) -> None:
    directory = _write_stack(env, free_port())
    saved = {f: (directory / f).read_text() for f in ("stack.json", "compose.yaml")}
    with _held("127.0.0.1") as held:
        port = held.getsockname()[1]
        proc = run_cli("stack", "up", "--dir", str(directory), "--gateway-port", str(port), env=env["env"], check=False,
                       timeout=60)
    assert proc.returncode == 1 and f"port {port} is already in use by another process" in proc.stderr, proc.stderr
    assert {f: (directory / f).read_text() for f in saved} == saved
    _nothing_created(env)
