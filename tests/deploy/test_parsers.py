"""The library parses and checks what the CLI used to (MODEL=REF, --env, --restart, limits, routes,
autoscaling), so a Python API user gets the same clear errors. In-process, no Docker."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from modelport.deploy.containers import RunSettings, parse_env
from modelport.deploy.stack import parse_deploy_target
from modelport.errors import ModelportError
from modelport.k8s.manifests import parse_autoscale


@pytest.mark.parametrize(("text", "ref"), [
    ("iris:2", "iris:2"), ("iris@production", "iris@production"), ("iris", "iris"),
    ("iris=2", "iris:2"), ("iris=iris:2", "iris:2"), ("iris=iris@production", "iris@production"),
    ("iris=iris", "iris"), ("iris=iris:latest", "iris"),
])
def test_deploy_targets(text: str, ref: str) -> None:
    assert parse_deploy_target(text) == ref


@pytest.mark.parametrize(("text", "message"), [
    ("iris=houses:2", "iris=houses:2: houses:2 is not a version of iris"),
    ("iris=houses", "iris=houses: houses is not a version of iris"),
    ("iris=", "Invalid deploy target 'iris=': expected MODEL=REF"),
    ("=2", "Invalid deploy target '=2': expected MODEL=REF"),
    ("iris=0", "Invalid version in 'iris:0'"),
    ("iris=²", "Invalid model name '²'"),  # not a version: str.isdigit's digits are not ours
    ("iris=iris:x", "Invalid version in 'iris:x'"),
])
def test_bad_deploy_targets_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ModelportError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_deploy_target(text)


def test_env_items() -> None:
    assert parse_env(["A=1", "B=", "C=x=y", "A=2"]) == {"A": "2", "B": "", "C": "x=y"}
    assert RunSettings.parse(env=["A=1"], restart="no", cpus=0.5, memory="512m") == \
        RunSettings(cpus=0.5, memory="512m", restart="no", env={"A": "1"})


@pytest.mark.parametrize("item", ["A", "=1", ""])
def test_a_bad_env_item_is_refused(item: str) -> None:
    with pytest.raises(ModelportError, match=f"Invalid environment variable {item!r} \\(--env\\): expected KEY=VALUE"):
        RunSettings.parse(env=[item])


def test_a_bad_env_name_is_refused_from_python_too() -> None:
    with pytest.raises(ModelportError, match="Invalid environment variable name 'A=B'"):
        RunSettings(env={"A=B": "1"})


@pytest.mark.parametrize("policy", ["always", "unless-stopped", "on-failure", "no"])
def test_restart_policies(policy: str) -> None:
    assert RunSettings(restart=policy).restart == policy


@pytest.mark.parametrize("policy", ["sometimes", "Always", "on-failure:3", ""])
def test_a_bad_restart_policy_is_refused(policy: str) -> None:
    with pytest.raises(ModelportError, match=f"Invalid restart policy {policy!r} \\(--restart\\): "
                                             "no, always, unless-stopped or on-failure$"):
        RunSettings(restart=policy)


@pytest.mark.parametrize(("cpus", "memory"), [(0, None), (-1.5, None), (None, "lots"), (None, "1t"), (None, "0"),
                                              (None, "g"), (None, "")])
def test_bad_limits_are_refused(cpus: float | None, memory: str | None) -> None:
    with pytest.raises(ModelportError, match="Invalid (CPU|memory) limit"):
        RunSettings(cpus=cpus, memory=memory)


@pytest.mark.parametrize("memory", ["512m", "2g", "1.5G", "1gb", "100000000", "64k"])
def test_memory_limits_docker_takes(memory: str) -> None:
    assert RunSettings(memory=memory).docker_kwargs()["mem_limit"] == memory


def test_modelport_run_refuses_a_bad_option_before_touching_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    import modelport.deploy.containers as svc
    from modelport.cli.main import app

    monkeypatch.setattr(svc, "run", lambda *a, **k: pytest.fail("run was called"))
    result = CliRunner().invoke(app, ["run", "iris", "--restart", "sometimes"])
    assert result.exit_code != 0
    assert "Invalid restart policy 'sometimes' (--restart)" in str(result.exception)


# -- Kubernetes autoscaling

def test_autoscale() -> None:
    assert parse_autoscale(None, 3) == (3, 12)
    assert parse_autoscale("off", 3) is None
    assert parse_autoscale("2:10", 3) == (2, 10)
    with pytest.raises(ModelportError, match="--autoscale '2-10': expected MIN:MAX"):
        parse_autoscale("2-10", 3)


def test_the_cold_start_breakdown_reads_the_engine_and_the_server_on_one_clock() -> None:
    from modelport.deploy.coldstart import ColdStart, engine_time, reported_ready
    from modelport.serving.timings import Timings, parse_line

    assert engine_time("2026-12-07T14:09:44.123456789Z") == pytest.approx(1796652584.123456789, abs=1e-6)
    assert engine_time("2026-12-07T14:09:44Z") == 1796652584.0
    timings = Timings(1000.0, worker=1000.5)
    timings.marks.update(imports=1000.6, loaded=1001.2, warmup=1001.25, ready=1001.3)
    line = timings.line()
    assert line == "Startup: process=1000.000 worker=+0.500s imports=+0.600s loaded=+1.200s warmup=+1.250s ready=+1.300s"
    stages = parse_line(f"2026-12-07 14:09:44,123 INFO modelport.server: {line}")
    assert stages == pytest.approx({"process": 1000.0, "worker": 1000.5, "imports": 1000.6, "loaded": 1001.2,
                                    "warmup": 1001.25, "ready": 1001.3})
    assert parse_line('{"message": "Startup: process=1000.000 imports=+0.600s"}') == {"process": 1000.0, "imports": 1000.6}
    # A replica has said it is ready (deploy/rollout.wait_ready tells the proxy) only with its line's "ready".
    assert reported_ready(f"  Loading lin\n2026-12-07 14:09:44,123 INFO modelport.server: {line}\n".encode())
    assert not reported_ready(b"  Loading lin\nStartup: process=1000.000 imports=+0.600s loaded=+1.200s\n")
    assert not reported_ready(b"")
    cold = ColdStart(999.0, {"created": 999.5, **stages, "proxy": 1001.5, "answered": 1001.6})
    assert cold.line() == ("Cold start: first prediction at 2.60s (created 0.50s, process 1.00s, worker 1.50s, imports 1.60s, "
                           "loaded 2.20s, warm-up 2.25s, ready 2.30s, in the gateway 2.50s, first prediction 2.60s)")
