"""The Swarm stack file rendered from stack.json, and the registry names, without an engine."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modelport.container.build import push_reference
from modelport.container.engine import _push_error
from modelport.deploy import proxy
from modelport.deploy.stack import (
    ModelService,
    Release,
    Stack,
    StackState,
    adopt_autoscaled,
    autoscaling,
    render_compose,
    render_swarm,
)
from modelport.deploy.swarm import SwarmProject, SwarmSettings
from modelport.errors import ModelportError
from tests.helpers import run_in_process

REGISTRY = "registry.example.com:5000/team"


def state(**swarm: str) -> StackState:
    lin = ModelService("lin", {"blue": Release(1, "d1", "modelport/lin:1", "lin-1"),
                               "green": Release(2, "d2", "modelport/lin:2", "lin-2")}, "blue", replicas=3, cpus=1.0,
                       memory="512m", canary=10)
    ridge = ModelService("ridge", {"blue": Release(4, "d4", "modelport/ridge:4", "ridge-4")}, "blue", cpus=2.0, memory="1g")
    return StackState(name="shop", db_image="docker.io/library/postgres:15", base_image="python:3.11-slim",
                      gateway_image="modelport/gateway:abc", gateway_host="127.0.0.1", gateway_port=8080,
                      control_image="modelport/control:1-x", models=[lin, ridge],
                      swarm=SwarmSettings(**{"registry": REGISTRY, "node": "node1", **swarm}))


def rendered(s: StackState | None = None) -> dict:
    return yaml.safe_load(render_swarm(s or state()))


def test_the_stack_file_has_a_service_per_slot_and_no_compose_only_keys() -> None:
    services = rendered()["services"]
    assert set(services) == {"db", "control", "lin-blue", "lin-green", "ridge-blue", "gateway", "keysync"}
    for name, service in services.items():
        assert "depends_on" not in service and "build" not in service and "restart" not in service, name
        assert service["deploy"]["endpoint_mode"] == "dnsrr", name  # no VIPs: no IPVS
        assert service["deploy"]["restart_policy"]["condition"] == "any", name
        assert service["image"].startswith(f"{REGISTRY}/"), name  # what the nodes pull


def test_model_services_spread_over_the_nodes_with_limits_and_updates() -> None:
    services = rendered()["services"]
    lin = services["lin-green"]
    assert lin["image"] == f"{REGISTRY}/modelport/lin:2-d2"  # the model's sha256 in the tag
    assert lin["command"][:2] == ["serve", "lin:2"] and "ports" not in lin
    deploy = lin["deploy"]
    assert deploy["replicas"] == 3 and deploy["placement"] == {"preferences": [{"spread": "node.id"}]}
    assert deploy["update_config"]["order"] == "start-first" and deploy["update_config"]["failure_action"] == "rollback"
    assert deploy["rollback_config"]["order"] == "start-first"
    assert deploy["resources"]["limits"] == {"cpus": "1.0", "memory": "512m"}
    assert deploy["resources"]["reservations"] == {"cpus": "0.25", "memory": "512m"}
    assert services["ridge-blue"]["deploy"]["resources"]["limits"] == {"cpus": "2.0", "memory": "1g"}
    assert lin["labels"]["io.modelport.slot"] == "green" and lin["deploy"]["labels"]["io.modelport.version"] == "2"
    assert "healthcheck" in lin and lin["stop_grace_period"] == "20s"


def test_the_gateway_publishes_in_host_mode_on_its_labelled_nodes_and_control_and_db_stay_on_theirs() -> None:
    doc = rendered()
    services = doc["services"]
    assert services["gateway"]["ports"] == [{"target": proxy.PORT, "published": 8080, "protocol": "tcp", "mode": "host"}]
    assert services["gateway"]["deploy"]["update_config"]["order"] == "stop-first"  # one task can hold the port
    for name in ("gateway", "keysync"):  # one task on each node labelled for the stack's gateway, side by side
        assert services[name]["deploy"]["mode"] == "global" and "replicas" not in services[name]["deploy"], name
        assert services[name]["deploy"]["placement"]["constraints"] == ["node.labels.io.modelport.shop.gateway == true"]
        assert services[name]["volumes"] == ["gateway-admin:/run/modelport-admin"], name
    assert doc["volumes"]["gateway-admin"]["driver_opts"] == {"type": "tmpfs", "device": "tmpfs", "o": "mode=1777"}
    assert "# host mode on each gateway node: node1 (" in render_swarm(state())
    assert "node2, node3 (" in render_swarm(state(gateway_nodes=["node2", "node3"]))
    for name in ("control", "db"):
        assert services[name]["deploy"]["placement"]["constraints"] == ["node.hostname == node1"], name
    assert services["db"]["image"] == f"{REGISTRY}/library/postgres:15"  # docker.io replaced by the registry
    assert services["db"]["volumes"] == ["db-data:/var/lib/postgresql/data"]
    other = rendered(state(node="db-host"))["services"]
    assert other["db"]["deploy"]["placement"]["constraints"] == ["node.hostname == db-host"]


def test_the_password_is_a_swarm_secret_read_from_a_file() -> None:
    doc = rendered()
    assert doc["secrets"]["db_password"]["file"] == "./secrets/db-password"
    for name in ("db", "control", "lin-blue", "keysync"):
        assert doc["services"][name]["secrets"] == ["db_password"]
    assert doc["services"]["db"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    assert doc["services"]["control"]["environment"]["MODELPORT_PREDICTIONS_DB_PASSWORD_FILE"] == "/run/secrets/db_password"


def test_networks_are_overlays_the_backend_internal_and_attachable() -> None:
    doc = rendered()
    assert doc["networks"]["backend"] == {"driver": "overlay", "internal": True, "attachable": True,
                                          "labels": {"io.modelport.stack": "shop", "io.modelport.role": "network"}}
    assert doc["services"]["gateway"]["networks"] == ["frontend", "backend"]
    assert doc["services"]["lin-blue"]["networks"] == ["backend"]
    assert doc["version"] == "3.8" and "autoscaler" not in doc["services"]


def test_the_state_round_trips_through_stack_json_and_compose_is_unchanged_by_it() -> None:
    s = state()
    again = StackState.from_json(json.loads(json.dumps(dataclasses.asdict(s))))
    assert again == s and again.swarm == SwarmSettings(REGISTRY, "", "node1")
    compose = render_compose(dataclasses.replace(s, swarm=None))
    assert "modelport/lin:2" in compose and REGISTRY not in compose  # Compose runs the local images
    assert StackState.from_json({**json.loads(json.dumps(dataclasses.asdict(s))), "swarm": None}).swarm is None


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_validates_the_stack_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "db-password").write_text("x")
    (tmp_path / "swarm-stack.yaml").write_text(render_swarm(state()))
    proc = subprocess.run(["docker-compose", "-f", "swarm-stack.yaml", "config", "-q"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_registry_references() -> None:
    settings = SwarmSettings("10.213.0.1:5000/")
    assert settings.registry == "10.213.0.1:5000"
    assert settings.image("modelport/lin:1") == "10.213.0.1:5000/modelport/lin:1"
    assert settings.image("postgres:15") == "10.213.0.1:5000/postgres:15"
    assert settings.image("localhost:5000/x/y:1") == "10.213.0.1:5000/x/y:1"
    assert settings.image("modelport/lin:1", "0123456789abcdef") == "10.213.0.1:5000/modelport/lin:1-0123456789ab"
    for bad in ("", "http://reg:5000", "a b"):
        with pytest.raises(ModelportError, match="--registry"):
            SwarmSettings(bad)


def test_push_references_take_the_built_images_tag_as_the_default_tag() -> None:
    assert push_reference("reg.example.com/models/lin", "modelport/lin:1") == "reg.example.com/models/lin:1"
    assert push_reference("10.0.0.1:5000/lin:prod", "modelport/lin:1") == "10.0.0.1:5000/lin:prod"
    assert push_reference("localhost/lin", "modelport/lin:1") == "localhost/lin:1"
    # The suffixes default_tag gave the image (another runtime, another platform) are the pushed tag's too.
    assert push_reference("localhost:5000/lin", "modelport/lin:2-onnx-arm64") == "localhost:5000/lin:2-onnx-arm64"
    assert push_reference("localhost/lin", "mine:edge") == "localhost/lin:edge"
    for bad in ("lin", "modelport/lin", "/lin", "reg.example.com/"):
        with pytest.raises(ModelportError, match="REGISTRY/REPOSITORY.*e.g. registry.example.com:5000/lin "):
            push_reference(bad, "modelport/lin:1")


def test_push_errors_say_what_to_do() -> None:
    assert "insecure-registries" in _push_error("r:5000", "r:5000/a:1", "http: server gave HTTP response to HTTPS client")
    assert "cannot be reached" in _push_error("r:5000", "r:5000/a:1", "dial tcp 10.0.0.9:5000: connect: connection refused")
    assert "docker login r:5000" in _push_error("r:5000", "r:5000/a:1", "unauthorized: authentication required")


POLICY = {"min": 1, "max": 4, "target": {"in_flight": 4}}


def test_a_model_with_an_autoscale_policy_gets_the_autoscaler_service_on_a_manager() -> None:
    s = state()
    s.models[0].autoscale = POLICY
    service = rendered(s)["services"]["autoscaler"]
    assert service["command"][:4] == ["stack", "autoscale", "--stack", "shop"]
    assert service["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert service["volumes"] == ["/var/run/docker.sock:/var/run/docker.sock"]
    assert service["user"] == "0" and service["image"] == f"{REGISTRY}/modelport/control:1-x"  # root: the socket's
    assert Stack(Path("/nonexistent"), s).services[-1] == "autoscaler"  # `stack logs autoscaler`, ps, up's wait
    assert "autoscaler" not in Stack(Path("/nonexistent"), dataclasses.replace(s, swarm=None)).services  # Compose


def test_the_autoscalers_interval_is_a_setting() -> None:
    s = state()
    s.models[0].autoscale = POLICY
    command = rendered(s)["services"]["autoscaler"]["command"]
    assert command[command.index("--every") + 1] == "2"  # the default
    s.swarm = SwarmSettings(REGISTRY, node="node1", autoscale_every=5)
    command = rendered(s)["services"]["autoscaler"]["command"]
    assert command[command.index("--every") + 1] == "5"
    with pytest.raises(ModelportError, match="--autoscale-every -1"):
        SwarmSettings(REGISTRY, autoscale_every=-1)


def test_the_autoscaler_mounts_the_socket_the_settings_name() -> None:
    s = state(docker_socket="/run/modelport-swarm/node1/docker.sock")  # several engines on one host
    s.models[0].autoscale = POLICY
    assert rendered(s)["services"]["autoscaler"]["volumes"] == ["/run/modelport-swarm/node1/docker.sock:/var/run/docker.sock"]
    again = StackState.from_json(json.loads(json.dumps(dataclasses.asdict(s))))
    assert again.swarm is not None and again.swarm.docker_socket == "/run/modelport-swarm/node1/docker.sock"
    for bad in ("docker.sock", "/a:/b", "unix:///var/run/docker.sock"):
        with pytest.raises(ModelportError, match="--docker-socket"):
            SwarmSettings(REGISTRY, docker_socket=bad)


def _service(replicas: int) -> dict:
    return {"Spec": {"Mode": {"Replicated": {"Replicas": replicas}}}}


@pytest.mark.parametrize(("running", "rendered_count"), [(3, 3), (6, 4), (None, 3)])
def test_a_redeploy_keeps_the_autoscalers_count_within_the_bounds(
        monkeypatch: pytest.MonkeyPatch, running: int | None, rendered_count: int) -> None:
    s = state()  # lin: 3 replicas in stack.json, autoscaled 1-4 below; ridge: 1, fixed
    s.models[0].autoscale = POLICY
    services = {"ridge-blue": _service(2), **({"lin-blue": _service(running)} if running else {})}
    monkeypatch.setattr(SwarmProject, "services", lambda self: services)
    stack = Stack(Path("/nonexistent"), s)
    s.models[0].replicas = 1 if running else 3  # what the autoscaler's count replaces (none yet: stack.json's)
    adopt_autoscaled(stack)
    doc = rendered(s)["services"]
    assert doc["lin-blue"]["deploy"]["replicas"] == doc["lin-green"]["deploy"]["replicas"] == rendered_count
    assert doc["ridge-blue"]["deploy"]["replicas"] == 1  # not autoscaled: stack.json's count is the truth


def test_ps_shows_each_autoscaled_models_policy_replicas_and_last_decision() -> None:
    s = state()
    s.models[0].autoscale = {**POLICY, "down_window": 30}
    last = {"desired": 2, "current": 1, "kind": "up", "reason": "in_flight 8/replica, target 4: 2 replica(s)",
            "time": "2026-12-07T14:00:00Z"}
    rows = [{"service": "lin-blue", "state": "running", "autoscale": last},
            {"service": "lin-blue", "state": "starting", "autoscale": last},
            {"service": "lin-green", "state": "running", "autoscale": None},
            {"service": "ridge-blue", "state": "running", "autoscale": None}]
    assert autoscaling(Stack(Path("/nonexistent"), s), rows) == [
        {"model": "lin", "service": "lin-blue", "policy": "1-4, in_flight 4/replica, down 30s", "running": 1, "tasks": 2,
         "last": "up → 2 at 2026-12-07T14:00:00Z (in_flight 8/replica, target 4: 2 replica(s))"}]
    s.models[0].autoscale = None
    assert autoscaling(Stack(Path("/nonexistent"), s), rows) == []


def test_scale_to_a_range_sets_a_policy_only_on_a_swarm(tmp_path: Path) -> None:
    s = dataclasses.replace(state(), swarm=None)
    Stack(tmp_path, s).save()
    out = run_in_process("stack", "scale", "lin", "1:3", "--in-flight", "4", "--dir", str(tmp_path), check=False)
    assert out.returncode != 0 and "Autoscaling runs on Docker Swarm" in out.stderr, out.stderr
    out = run_in_process("stack", "scale", "lin", "3", "--rps", "4", "--dir", str(tmp_path), check=False)
    assert out.returncode != 0 and "--rps go with MIN:MAX" in out.stderr, out.stderr
    assert json.loads((tmp_path / "stack.json").read_text())["models"][0]["autoscale"] is None


def test_stack_up_swarm_again_on_the_same_swarm_takes_the_new_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import modelport.deploy.stack as stack_module

    deployed = []
    monkeypatch.setattr(stack_module, "up_swarm", lambda stack, **_: deployed.append(stack.state.swarm))
    stack = Stack(Path("/nonexistent"), state())
    stack_module.up(stack, swarm_settings=SwarmSettings(REGISTRY, docker_socket="/run/engine1/docker.sock"))
    assert deployed == [SwarmSettings(REGISTRY, "", "node1", "/run/engine1/docker.sock")]  # its node kept
    stack_module.up(stack, swarm_settings=SwarmSettings(REGISTRY, gateway_nodes=["node1", "node2", "node1"]))
    assert deployed[-1] == SwarmSettings(REGISTRY, "", "node1", gateway_nodes=["node1", "node2"])
    stack_module.up(stack, swarm_settings=SwarmSettings(REGISTRY))  # no --gateway-node: the nodes kept
    assert deployed[-1].gateway_nodes == ["node1", "node2"]
    with pytest.raises(ModelportError, match="--gateway-node 'a b'"):
        SwarmSettings(REGISTRY, gateway_nodes=["a b"])


def test_the_keysync_tasks_hold_every_gateways_maps_and_the_gateway_has_their_socket() -> None:
    """The traffic and versions maps the models mean (lin: 10 % canary on green), in the keysync tasks'
    arguments; a step of a release (SwarmRuntime) changes stack.json's maps, hence the arguments."""
    s = state()
    assert s.routes() == {"traffic.map": {"lin-green": "10", "ridge-green": "0"},
                          "versions.map": {"lin-blue": "1", "lin-green": "2", "ridge-blue": "4"}}
    keysync = rendered(s)["services"]["keysync"]
    command = keysync["command"]
    assert command[:8] == ["stack", "keys", "sync", "--admin", "unix:/run/modelport-admin/haproxy.sock", "--every", "1",
                           "--ready-file"]
    assert [command[i + 1] for i, a in enumerate(command) if a == "--map"] == [
        "traffic.map:lin-green=10", "traffic.map:ridge-green=0",
        "versions.map:lin-blue=1", "versions.map:lin-green=2", "versions.map:ridge-blue=4"]
    assert keysync["healthcheck"]["test"] == ["CMD", "test", "-f", command[8]]
    s.gateway_maps = {**s.routes(), "traffic.map": {"lin-green": "100", "ridge-green": "0"}}
    assert "traffic.map:lin-green=100" in rendered(s)["services"]["keysync"]["command"]
    from modelport.deploy.stack import gateway_files

    assert "stats socket /run/modelport-admin/haproxy.sock mode 666 level admin" in gateway_files(s)["haproxy.cfg"]
    assert "/run/modelport-admin" not in gateway_files(dataclasses.replace(s, swarm=None))["haproxy.cfg"]
