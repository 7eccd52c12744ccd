"""Model images and services on the real Docker Engine."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import modelport
from tests.conftest import TEST_BASE_IMAGE, TEST_PROXY_IMAGE
from tests.helpers import Load, free_port, run_cli
from tests.image_contents import distributions, unneeded

# Image builds and stack start-ups take minutes; on a busy machine far more than the suite's 600 s default.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]
BASE = ["--base-image", TEST_BASE_IMAGE]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A store with two versions of a model (both trained by the CLI), and cleanup of everything
    this module creates on the engine, whatever happens."""
    import docker
    import pandas as pd

    tmp = tmp_path_factory.mktemp("docker")
    name = f"ct-{uuid.uuid4().hex[:6]}"
    env = {"MODELPORT_HOME": str(tmp / "home"), "MODELPORT_PROXY_IMAGE": TEST_PROXY_IMAGE}
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 8)), columns=[f"f{i}" for i in range(8)])
    frame["target"] = frame.to_numpy() @ np.arange(1, 9) + 3
    frame.to_csv(tmp / "data.csv", index=False)
    run_cli("train", "--data", str(tmp / "data.csv"), "--target", "target", "--name", name, env=env)
    run_cli("train", "--data", str(tmp / "data.csv"), "--target", "target", "--name", name, "--model", "random-forest", env=env)
    client = docker.from_env()
    yield {"env": env, "name": name, "tmp": tmp, "x": frame.iloc[:5, :8].to_numpy(), "client": client}
    for c in client.containers.list(all=True, filters={"label": "io.modelport.managed=true"}):
        if c.labels.get("io.modelport.service", "").startswith(name):
            c.remove(force=True)
    for net in client.networks.list(names=[f"modelport-{name}"]):
        net.remove()
    for image in client.images.list(name=f"modelport/{name}"):
        client.images.remove(image.id, force=True)


def _expected(env: dict, ref: str, x: np.ndarray) -> np.ndarray:
    """The model's predictions here. Compare to a container's within 1e-12, not exactly: OpenBLAS picks its
    kernel by CPU (or OPENBLAS_CORETYPE, which a host may set and a container does not inherit), and two
    kernels can differ in the last bit."""
    with pytest.MonkeyPatch.context() as patch:  # this call only: an unset MODELPORT_HOME is unset again after
        patch.setenv("MODELPORT_HOME", env["env"]["MODELPORT_HOME"])
        return modelport.load_model(ref).predict(x)


def _model_container(env: dict, service: str):
    (c,) = env["client"].containers.list(filters={"label": ["io.modelport.managed=true", f"io.modelport.service={service}",
                                                            "io.modelport.role=model"]})
    return c


def test_context_only_writes_a_lean_multistage_context(env: dict, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    run_cli("build", f"{env['name']}:1", "--context-only", str(ctx), *BASE, env=env["env"])
    dockerfile = (ctx / "Dockerfile").read_text()
    assert dockerfile.count("FROM modelport-test/python:3.11-slim") == 2 and "AS build" in dockerfile
    assert "--no-index" in dockerfile and "USER 10001:10001" in dockerfile and "HEALTHCHECK" in dockerfile
    assert "EXPOSE 8080" in dockerfile and "PYTHONDONTWRITEBYTECODE=1" in dockerfile
    lock = (ctx / "wheels" / "requirements.lock").read_text()
    assert "scikit-learn==" in lock and "modelport==" in lock and "torch" not in lock
    pinned = {line.split("==")[0] for line in lock.split()}
    assert {"uvicorn", "starlette"} <= pinned and not pinned & {"typer", "rich", "jinja2", "httpx", "swagger-ui-bundle", "sqlalchemy"}
    assert 'ENTRYPOINT ["python3", "-m", "modelport.serving"]' in dockerfile and "--check" in dockerfile
    assert sorted(p.name for p in (ctx / "swagger-ui").iterdir()) == ["swagger-ui-bundle.js", "swagger-ui.css"]
    assert {p.name for p in (ctx / "wheels").glob("*.whl")} and (ctx / "model" / "modelport.json").is_file()
    assert (ctx / ".dockerignore").read_text().strip().endswith("!model")
    assert "MODELPORT_WARMUP" not in dockerfile and not (ctx / "warmup").exists()
    # --prediction-log: the driver a server writing the log needs (the Helm chart's behind its gateway).
    run_cli("build", f"{env['name']}:1", "--context-only", str(tmp_path / "log"), "--prediction-log", *BASE, env=env["env"])
    pinned = {line.split("==")[0].lower() for line in (tmp_path / "log" / "wheels" / "requirements.lock").read_text().split()}
    assert {"sqlalchemy", "psycopg", "psycopg-binary"} <= pinned


def test_build_warmup_bakes_the_users_warm_up_request_into_the_image(env: dict, tmp_path: Path) -> None:
    """``build --warmup FILE``: the request is in the image, its server warms up with it (MODELPORT_WARMUP), and
    the build's check step answers it first; a file that is no v2 request is refused before any download."""
    body = {"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}
    (tmp_path / "warmup.json").write_text(json.dumps(body))
    ctx = tmp_path / "ctx"
    run_cli("build", f"{env['name']}:1", "--context-only", str(ctx), "--warmup", str(tmp_path / "warmup.json"), *BASE,
            env=env["env"])
    dockerfile = (ctx / "Dockerfile").read_text()
    assert json.loads((ctx / "warmup" / "warmup.json").read_text()) == body
    assert dockerfile.count("COPY warmup /opt/modelport-warmup") == 2  # the build stage's check, and the image
    assert "--check --warmup /opt/modelport-warmup/warmup.json" in dockerfile
    assert "MODELPORT_WARMUP=/opt/modelport-warmup/warmup.json" in dockerfile
    assert "!warmup" in (ctx / ".dockerignore").read_text()
    (tmp_path / "bad.json").write_text('{"features": [1, 2]}')
    out = run_cli("build", f"{env['name']}:1", "--context-only", str(tmp_path / "ctx2"), "--warmup", str(tmp_path / "bad.json"),
                  *BASE, env=env["env"], check=False)
    assert out.returncode == 1 and "not a v2 inference request" in out.stderr and not (tmp_path / "ctx2").exists()


def test_build_run_predict_and_inspect(env: dict) -> None:
    name, port = env["name"], free_port()
    out = run_cli("build", f"{name}:1", *BASE, env=env["env"], timeout=900)
    assert f"Built modelport/{name}:1" in out.stdout and "Step 1/" in out.stdout  # the engine's progress is shown
    image = env["client"].images.get(f"modelport/{name}:1")
    labels = image.labels
    assert labels["io.modelport.model"] == name and labels["io.modelport.version"] == "1"
    assert labels["io.modelport.framework"] == "sklearn" and len(labels["io.modelport.sha256"]) == 64
    assert labels["org.opencontainers.image.created"]
    out = run_cli("run", f"{name}:1", "--port", str(port), "--name", name, "--cpus", "1", "--memory", "512m", *BASE,
                  env=env["env"], timeout=600)
    assert f"http://127.0.0.1:{port}" in out.stdout
    _check_breakdown(out.stdout, worker=False)  # --cpus 1: one server process
    r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"features": env["x"][0].tolist()})
    assert r.status_code == 200 and r.json()["prediction"] == pytest.approx(_expected(env, f"{name}:1", env["x"][:1])[0],
                                                                           rel=1e-12)

    model = _model_container(env, name)
    deadline = time.monotonic() + 30
    while model.attrs["State"]["Health"]["Status"] != "healthy" and time.monotonic() < deadline:
        time.sleep(0.5)
        model.reload()
    assert model.attrs["State"]["Health"]["Status"] == "healthy"
    assert model.attrs["HostConfig"]["NanoCpus"] == 1_000_000_000
    assert model.attrs["HostConfig"]["Memory"] == 512 * 1024 * 1024
    assert model.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert model.attrs["NetworkSettings"]["Ports"] in ({}, {"8080/tcp": None})  # only the gateway publishes
    assert model.exec_run(["id", "-u"]).output.decode().strip() == "10001"
    assert model.exec_run(["python3", "-c", "import torch"]).exit_code != 0  # a scikit-learn image carries no torch
    # Serving's runtime only: no command line (Typer, Rich, Jinja2, httpx), no docker SDK, no pip.
    dists = distributions(lambda cmd: model.exec_run(cmd, demux=True).output[0].decode())
    assert {"modelport", "scikit-learn", "uvicorn"} <= set(dists) and unneeded(dists, "sklearn", "regression") == []
    cli = model.exec_run(["modelport", "--version"], demux=True)
    assert cli.exit_code == 1 and "pip install 'modelport[cli]'" in cli.output[1].decode()
    # Writing the prediction log needs the database driver, which a plain image lacks: it says how to build one.
    log = model.exec_run(["python3", "-m", "modelport.serving", "serve", f"{name}:1", "--port", "8081",
                          "--log-db", "sqlite:////tmp/predictions.db"], demux=True)
    assert log.exit_code == 1 and "modelport build REF --prediction-log" in log.output[1].decode(), log.output


def _check_breakdown(stdout: str, *, worker: bool) -> None:
    """`run`'s cold start line has every stage, in order, on one clock: the engine's, the server's own (its
    Startup: line), the gateway's check and the first prediction through it, all after the command started."""
    (line,) = [ln.strip() for ln in stdout.splitlines() if ln.strip().startswith("Cold start:")]
    stages = dict(re.findall(r"([a-z][a-z -]*?) ([0-9.]+)s[,)]", line.split("(", 1)[1]))
    expected = ["created", "started", "process", *(["worker"] if worker else []), "imports", "loaded", "warm-up",
                "ready", "in the gateway", "first prediction"]
    assert list(stages) == expected, line
    seconds = {k: float(v) for k, v in stages.items()}
    # The server's process starts as the engine starts the container (its StartedAt may be taken a moment after).
    assert 0 < seconds["created"] <= min(seconds["started"], seconds["process"]), line
    server = list(seconds.values())[2:]
    assert server == sorted(server), line
    assert line.startswith(f"Cold start: first prediction at {stages['first prediction']}s"), line


def test_ps_logs_exec_stop_start_restart_rm(env: dict) -> None:
    name = env["name"]
    url = f"http://127.0.0.1:{_published_port(env, name)}"
    rows = json.loads(run_cli("ps", "--json", env=env["env"]).stdout)
    mine = [r for r in rows if r["service"] == name]
    assert {r["role"] for r in mine} == {"gateway", "model"} and all(r["status"] == "running" for r in mine)
    assert "Application startup complete" in run_cli("logs", name, "--tail", "50", env=env["env"]).stdout
    assert run_cli("exec", name, "--", "id", "-un", env=env["env"]).stdout.strip() == "modelport"

    run_cli("stop", name, env=env["env"])
    assert {c.status for c in env["client"].containers.list(all=True, filters={"label": f"io.modelport.service={name}"})} == {"exited"}
    with pytest.raises(httpx.HTTPError):
        httpx.post(url + "/predict", json={"features": [0] * 8}, timeout=3)
    assert "--all" not in run_cli("ps", "--all", env=env["env"]).stderr
    # Each returns once the proxy has the replica up, which its new start's ready line (not the one its log
    # keeps from the start before) may hasten: the very next request is answered.
    run_cli("start", name, env=env["env"], timeout=300)
    assert httpx.post(url + "/predict", json={"features": [0] * 8}, timeout=10).status_code == 200
    before = _model_container(env, name).attrs["State"]["StartedAt"]
    run_cli("restart", name, env=env["env"], timeout=300)
    assert _model_container(env, name).attrs["State"]["StartedAt"] != before
    assert httpx.post(url + "/predict", json={"features": [0] * 8}, timeout=10).status_code == 200

    out = run_cli("rm", name, env=env["env"], check=False)
    assert out.returncode == 1 and "is running" in out.stderr
    run_cli("rm", name, "--force", env=env["env"])
    assert not env["client"].containers.list(all=True, filters={"label": f"io.modelport.service={name}"})
    assert not env["client"].networks.list(names=[f"modelport-{name}"])


def _published_port(env: dict, service: str) -> int:
    (gw,) = env["client"].containers.list(filters={"label": [f"io.modelport.service={service}", "io.modelport.role=gateway"]})
    return int(gw.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])


def test_deploy_and_rollback_without_a_failed_request(env: dict) -> None:
    name, port = env["name"] + "-r", free_port()
    run_cli("run", f"{env['name']}:1", "--port", str(port), "--name", name, *BASE, env=env["env"], timeout=600)
    url = f"http://127.0.0.1:{port}"
    with Load(url) as load:
        run_cli("deploy", f"{env['name']}:2", "--replace", name, *BASE, env=env["env"], timeout=900)
        time.sleep(1)
    assert load.failed == [] and load.ok > 50 and load.versions == {"1", "2"}
    r = httpx.post(url + "/predict", json={"features": env["x"][0].tolist()})
    assert r.headers["x-model-version"] == "2"
    assert gateway_version(env, name) == "2"  # what the gateway serves now, not the version it started with
    assert r.json()["prediction"] == pytest.approx(_expected(env, f"{env['name']}:2", env["x"][:1])[0])
    with Load(url) as load:
        out = run_cli("rollback", name, *BASE, env=env["env"], timeout=900)
        time.sleep(1)
    assert "rolled back to" in out.stdout and f"{env['name']}:1" in out.stdout
    assert load.failed == [] and load.versions == {"1", "2"}
    r = httpx.post(url + "/predict", json={"features": env["x"][0].tolist()})
    assert r.headers["x-model-version"] == "1"
    assert gateway_version(env, name) == "1"
    assert r.json()["prediction"] == pytest.approx(_expected(env, f"{env['name']}:1", env["x"][:1])[0], rel=1e-12)
    assert len(env["client"].containers.list(filters={"label": [f"io.modelport.service={name}", "io.modelport.role=model"]})) == 1


def gateway_version(env: dict, service: str) -> str:
    (row,) = [r for r in json.loads(run_cli("ps", "--json", env=env["env"]).stdout)
              if r["service"] == service and r["role"] == "gateway"]
    return row["version"]


def _broken_image(env: dict, tmp_path: Path) -> str:
    """An image of version 2 whose artifact was corrupted after the context was written. The build's
    own load check refuses it; built without that step (a hand-edited Dockerfile), it fails at start."""
    from modelport.container import engine

    ctx = tmp_path / "broken"
    run_cli("build", f"{env['name']}:2", "--context-only", str(ctx), *BASE, env=env["env"], timeout=600)
    blob = next(p for p in (ctx / "model" / "files").rglob("*") if p.is_file())
    blob.write_bytes(blob.read_bytes()[:-10])
    tag = f"modelport/{env['name']}:broken"
    with pytest.raises(engine.BuildError, match="is corrupted"):
        engine.build(ctx, tag)
    dockerfile = ctx / "Dockerfile"
    text = dockerfile.read_text()
    check = text.index("RUN PYTHONDONTWRITEBYTECODE=1 MODELPORT_HOME")
    dockerfile.write_text(text[:check] + text[text.index("--check\n", check) + len("--check\n"):])
    engine.build(ctx, tag)
    shutil.rmtree(ctx)
    return tag


def test_failed_starts_name_the_cause_and_keep_the_current_version(env: dict, tmp_path: Path) -> None:
    tag = _broken_image(env, tmp_path)
    out = run_cli("run", tag, "--name", env["name"] + "-b", "--port", str(free_port()), "--restart", "no", env=env["env"],
                  check=False, timeout=300)
    assert out.returncode == 1
    text = " ".join(out.stderr.split())
    assert "did not start" in text and "exit code 1" in text and "is corrupted" in text
    assert not env["client"].containers.list(all=True, filters={"label": f"io.modelport.service={env['name']}-b"})

    name, port = env["name"] + "-k", free_port()
    run_cli("run", f"{env['name']}:1", "--port", str(port), "--name", name, *BASE, env=env["env"], timeout=600)
    with Load(f"http://127.0.0.1:{port}") as load:
        out = run_cli("deploy", tag, "--replace", name, env=env["env"], check=False, timeout=300)
    assert out.returncode == 1
    text = " ".join(out.stderr.split())
    assert "is corrupted" in text and "The current version (1) keeps serving" in text
    assert load.failed == [] and load.versions == {"1"}
    run_cli("rm", name, "--force", env=env["env"])


def test_doctor_explains_problems(env: dict) -> None:
    name, port = env["name"] + "-d", free_port()
    run_cli("run", f"{env['name']}:1", "--port", str(port), "--name", name, *BASE, env=env["env"], timeout=600)
    out = run_cli("doctor", "--port", str(port), env=env["env"], check=False)
    assert "Docker Engine" in out.stdout and f"✔ Port {port} is in use by modelport service {name}" in out.stdout
    _model_container(env, name).kill()
    out = run_cli("doctor", "--port", str(free_port()), env=env["env"], check=False)
    assert out.returncode == 1 and "is not serving" in out.stdout and "exit code" in out.stdout
    run_cli("rm", name, "--force", env=env["env"])


def test_build_failure_names_the_step(env: dict) -> None:
    out = run_cli("build", f"{env['name']}:1", "--tag", f"modelport/{env['name']}:nopython", "--base-image",
                  "modelport-test/debian:bookworm", env=env["env"], check=False, timeout=600)
    assert out.returncode == 1
    text = " ".join(out.stderr.split())
    assert "Image build failed at Step" in text and "python3 -m venv" in text
    # The terminal got the steps, not the tools' output; all of it is in the log the error names.
    log = Path(re.search(r"Full log: (\S+)", out.stderr)[1])
    assert "Step 1/" in out.stdout and " ---> " not in out.stdout
    assert " ---> " in log.read_text() and "Step 1/" in log.read_text()


def test_run_rebuilds_an_image_that_holds_another_stores_model(env: dict, tmp_path: Path) -> None:
    """Another store with a model of the same name and version: `run` must not serve the image of the first."""
    import pandas as pd

    name, port = env["name"], free_port()
    other = {**env["env"], "MODELPORT_HOME": str(tmp_path / "other-home")}
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(100, 8)), columns=[f"f{i}" for i in range(8)])
    frame["target"] = frame.to_numpy() @ -np.arange(1, 9)
    frame.to_csv(tmp_path / "other.csv", index=False)
    run_cli("train", "--data", str(tmp_path / "other.csv"), "--target", "target", "--name", name, env=other)
    assert env["client"].images.get(f"modelport/{name}:1")  # built earlier from the module's store
    out = run_cli("run", f"{name}:1", "--port", str(port), "--name", f"{name}-other", *BASE, env=other, timeout=600)
    assert "another model of that name and version" in out.stdout + out.stderr
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"features": env["x"][0].tolist()})
        assert r.status_code == 200
        assert r.json()["prediction"] == pytest.approx(float(env["x"][0] @ -np.arange(1, 9)), rel=1e-6)
    finally:
        run_cli("rm", f"{name}-other", "--force", env=other)
