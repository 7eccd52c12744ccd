from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import Server, free_port

pytest_plugins = ["tests.fixtures_db", "tests.fixtures_serving", "tests.fixtures_swarm"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty store of its own for each test (the environment is what subprocesses inherit)."""
    h = tmp_path / "mp-home"
    monkeypatch.setenv("MODELPORT_HOME", str(h))
    monkeypatch.delenv("MODELPORT_DB_URL", raising=False)
    return h


@pytest.fixture
def store(home: Path):
    from modelport.store import ModelStore

    s = ModelStore()
    yield s
    s.close()


@pytest.fixture
def regression_csv(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A CSV with 8 named numeric features and a linear target (plus noise)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    y = x @ np.arange(1, 9) + 3 + rng.normal(scale=0.1, size=200)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)])
    frame["target"] = y
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path, x, y


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Start ``modelport serve ARGS`` on a free port; every server is stopped after the test."""
    servers: list[Server] = []

    def start(*args: str, workers: int = 1, ready: bool = True, env: dict[str, str] | None = None) -> Server:
        port = free_port()
        server = Server(["serve", *args, "--port", str(port), "--workers", str(workers)], port,
                        tmp_path / f"server-{port}.log", env=env)
        servers.append(server)
        return server.wait_ready() if ready else server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server, initialised in a temporary directory, on a free loopback port."""
    bindir = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
    if bindir is None:
        message = "PostgreSQL server binaries not found: apt-get install postgresql-15 (scripts/test-env.sh does)"
        if os.environ.get("MODELPORT_REQUIRE_DOCKER"):  # scripts/test.sh, CI: nothing is skipped there
            pytest.fail(message)
        pytest.skip(message)
    # Its own directory outside pytest's (root-only) temp tree: the server runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="modelport-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    log = data.parent / "pg.log"
    subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                    f"-p {port} -k {data.parent} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        for _ in range(50):
            if subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "modelport"], check=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/modelport"
    finally:
        subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _docker_reachable() -> str | None:
    try:
        import docker

        docker.from_env(timeout=10).ping()
        return None
    except Exception as e:  # any failure to connect is the same answer here
        return str(e)


def _module_fixtures(item: pytest.Item) -> bool:
    """Whether ``item`` uses a module-scoped fixture defined in its own module (a server, a trained store)."""
    module = item.nodeid.split("::", 1)[0]
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(d.scope == "module" and d.baseid == module
                                    for defs in info.name2fixturedefs.values() for d in defs)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest tests run first (pytest-xdist hands the tests out in this order: a long one started
    last would end the run alone), and the tests of a module that share its module-scoped fixtures
    run on one xdist worker (``--dist loadgroup``), which sets them up once. Docker tests need an
    engine. Under scripts/test.sh (and so in CI) a missing engine fails the run; elsewhere the tests
    are skipped with the reason shown."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)  # stable: otherwise in file order
    for item in items:
        if _module_fixtures(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    if not any(item.get_closest_marker("docker") for item in items):
        return
    problem = _docker_reachable()
    if problem is None:
        return
    if os.environ.get("MODELPORT_REQUIRE_DOCKER"):
        raise pytest.UsageError(f"Docker tests must run but the engine is not reachable: {problem}")
    skip = pytest.mark.skip(reason=f"no Docker engine ({problem}); scripts/test-env.sh starts one")
    for item in items:
        if item.get_closest_marker("docker"):
            item.add_marker(skip)


# Tests build on a local stand-in for python:3.11-slim (no registry is reachable here).
TEST_BASE_IMAGE = os.environ.get("MODELPORT_TEST_BASE_IMAGE", "modelport-test/python:3.11-slim")
# The gateway is built on a local stand-in for haproxy:2.6 (Debian's HAProxy 2.6, scripts/test-env.sh).
TEST_PROXY_IMAGE = os.environ.get("MODELPORT_TEST_PROXY_IMAGE", "modelport-test/haproxy:2.6")
# Every `modelport run` a test starts, in-process or in a subprocess, builds its gateway on that stand-in.
os.environ.setdefault("MODELPORT_PROXY_IMAGE", TEST_PROXY_IMAGE)
