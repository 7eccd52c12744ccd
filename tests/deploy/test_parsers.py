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
