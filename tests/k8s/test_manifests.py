"""``modelport k8s``: every manifest and every ``helm template`` output passes strict schema validation
(Kubernetes 1.37, KServe's InferenceService model), ``helm lint`` passes, the chart renders what
``k8s export`` writes, a changed value shows in the output, and no secret is in any generated file."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.container.build import default_tag
from modelport.store import ModelStore, ModelVersion
from tests import fixtures_images
from tests.helpers import run_in_process
from tests.k8s.validation import documents, helm, read_dir, validate

mobilenet_onnx = fixtures_images.mobilenet_onnx  # the session-wide export, used as a fixture here
MODELS = ["houses", "mobilenet-v2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, mobilenet_onnx: tuple[Path, Path]) -> Iterator[Path]:
    """A store with a scikit-learn model in two versions and MobileNetV2; → its home."""
    from sklearn.linear_model import LinearRegression

    import modelport
    from modelport.images.register import import_image_classifier

    home = tmp_path_factory.mktemp("k8s-home")
    store = ModelStore(home)
    x = np.random.default_rng(0).normal(size=(60, 4))
    for scale in (1.0, 2.0):
        modelport.save_model(LinearRegression().fit(x, x @ [1, 2, 3, 4] * scale), "houses", store=store)
    onnx_path, labels = mobilenet_onnx
    import_image_classifier("mobilenet-v2", onnx_path, labels=labels, preprocess="imagenet", store=store)
    store.close()
    yield home


@pytest.fixture(autouse=True)
def in_store(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPORT_HOME", str(models))
    monkeypatch.delenv("MODELPORT_DB_URL", raising=False)


def version(models: Path, ref: str) -> ModelVersion:
    store = ModelStore(models)
    try:
        return store.resolve(ref)
    finally:
        store.close()


def k8s(*args: str) -> str:
    result = run_in_process("k8s", *map(str, args), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        found.setdefault(d["kind"], []).append(d)
    return found


def flat(files: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [d for docs in files.values() for d in docs]


def canary_args(model: str) -> list[str]:
    return ["--canary", "houses:2:10"] if model == "houses" else []


def ref_of(model: str) -> str:
    return "houses:1" if model == "houses" else model


@pytest.mark.parametrize("model", MODELS)
def test_export_passes_strict_validation_and_carries_the_models_metadata(
        model: str, models: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    k8s("export", ref_of(model), "-o", out, "--namespace", "ml", *canary_args(model))
    files = read_dir(out)
    assert sorted(files) == ["deployment.yaml", "hpa.yaml", "pdb.yaml", "service.yaml", "servicemonitor.yaml"]
    docs = flat(files)
    assert sorted(validate(docs)) == sorted(["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service",
                                             "ServiceMonitor", *(["Deployment"] if model == "houses" else [])])
    assert {d["metadata"]["namespace"] for d in docs} == {"ml"}
    deployments = by_kind(docs)["Deployment"]
    expected = [version(models, ref_of(model)), *([version(models, "houses:2")] if model == "houses" else [])]
    for d, mv in zip(deployments, expected, strict=True):
        pod = d["spec"]["template"]
        for meta in (d["metadata"], pod["metadata"]):
            assert meta["annotations"]["modelport.io/sha256"] == mv.digest
            assert meta["annotations"]["modelport.io/framework"] == meta["labels"]["modelport.io/framework"] == mv.framework
            assert meta["labels"]["modelport.io/version"] == meta["labels"]["app.kubernetes.io/version"] == str(mv.version)
            assert meta["annotations"]["modelport.io/model"] == mv.name
        (container,) = pod["spec"]["containers"]
        assert container["image"] == default_tag(mv)  # the tag `modelport build` gives it
        # the selector picks this track's pods only; the Service picks both tracks
        assert d["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (service,) = by_kind(docs)["Service"]
    for d in deployments:
        assert service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    (monitor,) = by_kind(docs)["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


@pytest.mark.parametrize("model", MODELS)
def test_pods_run_locked_down_with_only_emptydir_writable(model: str, models: Path, tmp_path: Path) -> None:
    k8s("export", ref_of(model), "-o", tmp_path)
    mv = version(models, ref_of(model))
    (deployment,) = documents((tmp_path / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in c["volumeMounts"]:  # everything writable is an emptyDir, large enough for the model's files
        size = volumes[mount["name"]]["emptyDir"]["sizeLimit"]
        assert int(size.removesuffix("Mi")) * 2**20 > sum(f.size for f in mv.files.values())
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] == c["ports"][0]["name"]


def helm_template(chart: Path, *sets: str) -> list[dict[str, Any]]:
    args = [a for s in sets for a in ("--set", s)]
    return documents(helm("template", "release", str(chart), *args).stdout)


def comparable(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """What an object does (its spec, its pods' spec and annotations), by kind and name: the same from
    either renderer. Labels differ only in who manages them (Helm's own labels)."""
    out = {}
    for d in docs:
        spec = dict(d["spec"])
        if "template" in spec:
            spec["template"] = {"spec": spec["template"]["spec"], "annotations": spec["template"]["metadata"]["annotations"]}
        out[d["kind"], d["metadata"]["name"]] = spec
    return out


@pytest.mark.parametrize("model", MODELS)
def test_chart_lints_and_renders_what_export_writes(model: str, tmp_path: Path) -> None:
    chart, out = tmp_path / "chart", tmp_path / "manifests"
    k8s("chart", ref_of(model), "-o", chart, *canary_args(model))
    k8s("export", ref_of(model), "-o", out, *canary_args(model))
    lint = helm("lint", "--strict", str(chart))
    assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout
    rendered = helm_template(chart)
    assert sorted(validate(rendered)) == sorted(validate(flat(read_dir(out))))
    exported = flat(read_dir(out))
    assert comparable(rendered) == comparable(exported)
    for h, e in zip(sorted(rendered, key=lambda d: (d["kind"], d["metadata"]["name"])),
                    sorted(exported, key=lambda d: (d["kind"], d["metadata"]["name"])), strict=True):
        assert {**e["metadata"]["labels"], "app.kubernetes.io/managed-by": "Helm"}.items() <= h["metadata"]["labels"].items()
        assert h["metadata"].get("annotations", {}).items() <= e["metadata"].get("annotations", {}).items()


def test_kserve_inference_service_and_its_canary(tmp_path: Path, models: Path) -> None:
    out, chart = tmp_path / "kserve", tmp_path / "chart"
    k8s("kserve", "houses:1", "--canary", "houses:2:10", "-o", out)
    k8s("chart", "houses:1", "--canary", "houses:2:10", "-o", chart)
    files = read_dir(out)
    assert sorted(files) == ["inferenceservice-canary.yaml", "inferenceservice.yaml"]
    (stable,), (canary,) = files["inferenceservice.yaml"], files["inferenceservice-canary.yaml"]
    assert validate([stable, canary]) == ["InferenceService", "InferenceService"]
    assert stable["metadata"]["name"] == canary["metadata"]["name"] == "houses"  # the same resource, updated
    assert "canaryTrafficPercent" not in stable["spec"]["predictor"]
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    images = [d["spec"]["predictor"]["containers"][0]["image"] for d in (stable, canary)]
    assert images == [default_tag(version(models, "houses:1")), default_tag(version(models, "houses:2"))]
    # the chart's KServe mode: the same predictor, stable without the canary, the canary with it
    (from_chart,) = helm_template(chart, "kserve.enabled=true")
    (from_chart_stable,) = helm_template(chart, "kserve.enabled=true", "canary.enabled=false")
    validate([from_chart, from_chart_stable])
    assert from_chart["spec"] == canary["spec"] and from_chart_stable["spec"] == stable["spec"]


def test_a_changed_value_shows_in_the_rendered_output(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    k8s("chart", "houses:1", "--canary", "houses:2:10", "-o", chart)

    def deployment(docs: list[dict[str, Any]], name: str = "houses") -> dict[str, Any]:
        return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)

    fixed = helm_template(chart, "autoscaling.enabled=false", "replicaCount=5")
    validate(fixed)
    assert deployment(fixed)["spec"]["replicas"] == 5 and "HorizontalPodAutoscaler" not in {d["kind"] for d in fixed}
    assert "replicas" not in deployment(helm_template(chart))["spec"]  # the autoscaler owns it
    assert deployment(helm_template(chart), "houses-canary")["spec"]["replicas"] == 1  # 10% of 2 pods: one pod
    assert deployment(helm_template(chart, "canary.weight=50"), "houses-canary")["spec"]["replicas"] == 2
    (isvc,) = helm_template(chart, "kserve.enabled=true", "canary.weight=25")
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 25
    bigger = helm_template(chart, "resources.limits.memory=3Gi", "resources.requests.cpu=250m")
    validate(bigger)
    resources = deployment(bigger)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"]["memory"] == "3Gi" and resources["requests"]["cpu"] == "250m"
    # the same through `k8s export`
    out = tmp_path / "out"
    k8s("export", "houses:1", "-o", out, "--replicas", "3", "--autoscale", "off", "--memory", "2Gi", "--cpu", "500m")
    files = read_dir(out)
    assert "hpa.yaml" not in files
    (d,) = files["deployment.yaml"]
    assert d["spec"]["replicas"] == 3
    assert d["spec"]["template"]["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "500m", "memory": "2Gi"},
                                                                            "limits": {"cpu": "500m", "memory": "2Gi"}}
    k8s("export", "houses:1", "-o", out, "--autoscale", "3:12")
    (hpa,) = read_dir(out)["hpa.yaml"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    k8s("export", "houses:1", "-o", out, "--autoscale", "off")  # again: the autoscaler's file goes
    assert "hpa.yaml" not in read_dir(out)
    (out / "mine.yaml").write_text("kind: ConfigMap\n")  # a file of the user's stays; one in the way is refused
    k8s("export", "houses:1", "-o", out)
    assert (out / "mine.yaml").read_text() == "kind: ConfigMap\n"
    (out / "hpa.yaml").write_text("kind: Mine\n")
    refused = run_in_process("k8s", "export", "houses:1", "-o", str(out), check=False)
    assert refused.returncode == 1 and "did not write: hpa.yaml" in " ".join(refused.stderr.split())


@pytest.mark.parametrize("bad", ["replicaCount=0", "canary.weight=100", "replicas=3", "image.pullPolicy=Sometimes"])
def test_chart_values_schema_refuses_bad_values(bad: str, tmp_path: Path) -> None:
    k8s("chart", "houses:1", "-o", tmp_path / "chart")
    result = helm("template", "release", str(tmp_path / "chart"), "--set", bad, check=False)
    assert result.returncode != 0 and "values don't meet the specifications of the schema" in result.stderr


def test_stack_export_references_the_password_secret_and_never_holds_it(
        models: Path, tmp_path: Path) -> None:
    from modelport.deploy.stack import PASSWORD_FILE, ModelService, Stack, StackState

    directory = tmp_path / "shop"
    directory.mkdir()
    state = StackState(name="shop", db_image="postgres:16", base_image="python:3.11-slim",
                       gateway_image="modelport/gateway:0123456789ab", gateway_host="127.0.0.1", gateway_port=8080,
                       control_image="modelport/control:0.1.0-0123456789ab",
                       models=[ModelService.of(version(models, "houses:2")), ModelService.of(version(models, "mobilenet-v2"))])
    Stack(directory, state).save()
    password = secrets.token_hex(24)
    (directory / PASSWORD_FILE).parent.mkdir()
    (directory / PASSWORD_FILE).write_text(password)
    out = tmp_path / "k8s"
    printed = k8s("stack", "-C", directory, "-o", out, "--namespace", "shop")
    assert "kubectl create secret generic shop-db --namespace shop --from-file=password=secrets/db-password" in printed
    files = read_dir(out)
    assert {"gateway.yaml", "db.yaml", "models/houses/deployment.yaml", "models/mobilenet-v2/deployment.yaml"} <= set(files)
    kinds = validate(flat(files))
    assert {"StatefulSet", "Deployment", "Service", "HorizontalPodAutoscaler", "ServiceMonitor"} <= set(kinds)
    assert "Secret" not in kinds  # created by the user from the stack's file, never written here
    texts = [p.read_text() for p in out.rglob("*") if p.is_file()]
    assert not [t for t in texts if password in t]
    gateway, db = by_kind(files["gateway.yaml"])["Deployment"][0], by_kind(files["db.yaml"])["StatefulSet"][0]
    houses = by_kind(files["models/houses/deployment.yaml"])["Deployment"][0]
    for workload in (gateway, db, houses):
        pod = workload["spec"]["template"]["spec"]
        assert {v["name"]: v.get("secret", {}).get("secretName") for v in pod["volumes"]}["db-password"] == "shop-db"
        for container in pod["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert not {"POSTGRES_PASSWORD", "PGPASSWORD"} & set(env)  # only the file's path is in the environment
    # The gateway pod: HAProxy on the stack's configuration (a ConfigMap), and the control sidecars.
    pod = gateway["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"gateway", "proxy-log", "keys"}
    assert containers["gateway"]["image"] == "haproxy:2.6"
    assert containers["gateway"]["command"][-1] == "/usr/local/etc/haproxy/haproxy.cfg"
    assert {c["image"] for n, c in containers.items() if n != "gateway"} == {"modelport/control:0.1.0-0123456789ab"}
    assert containers["keys"]["args"][:3] == ["stack", "keys", "sync"] and "127.0.0.1:9999" in containers["keys"]["args"]
    assert containers["proxy-log"]["args"][:2] == ["predictions", "receive"]
    (config,) = by_kind(files["gateway.yaml"])["ConfigMap"]
    assert {v["name"]: v.get("configMap", {}).get("name") for v in pod["volumes"]}["config"] == config["metadata"]["name"]
    cfg = config["data"]["haproxy.cfg"]
    assert "parse-resolv-conf" in cfg and "log 127.0.0.1:5140" in cfg
    assert "server-template r 1-16 houses.${POD_NAMESPACE}.svc.cluster.local:8080" in cfg
    assert "server-template r 1-16 mobilenet-v2.${POD_NAMESPACE}.svc.cluster.local:8080" in cfg
    assert config["data"]["versions.map"] == "houses-blue 2\nmobilenet-v2-blue 1\n" and config["data"]["keys.map"] == ""
    # The models: headless Services (the proxy checks each pod), servers writing the prediction log.
    assert by_kind(files["models/houses/service.yaml"])["Service"][0]["spec"]["clusterIP"] == "None"
    model = houses["spec"]["template"]["spec"]["containers"][0]
    assert model["args"][:2] == ["serve", "houses:2"] and "--trust-proxy-headers" in model["args"]
    assert model["args"][model["args"].index("--log-db") + 1] == "postgresql+psycopg://modelport@shop-db:5432/predictions"
    spool = model["args"][model["args"].index("--spool-dir") + 1]
    assert spool in {m["mountPath"] for m in model["volumeMounts"]}
    # the chart's gateway: the Secrets by name only
    chart = tmp_path / "chart"
    k8s("chart", "houses:2", "-o", chart)
    lint = helm("lint", "--strict", str(chart), "--set", "gateway.enabled=true", "--set", "gateway.controlImage.tag=x",
                "--set", "gateway.predictionLog.urlSecret.name=predlog")
    assert "1 chart(s) linted, 0 chart(s) failed" in lint.stdout
    docs = helm_template(chart, "gateway.enabled=true", "gateway.controlImage.tag=0.1.0-0123456789ab",
                         "gateway.predictionLog.urlSecret.name=predlog", "gateway.predictionLog.passwordSecret.name=predlog-pw")
    validate(docs)
    (gw,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "houses-gateway"]
    pod = gw["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"gateway", "proxy-log", "keys"} and containers["gateway"]["image"] == "haproxy:2.6"
    assert containers["keys"]["image"] == "modelport/control:0.1.0-0123456789ab"
    assert containers["keys"]["args"][:3] == ["stack", "keys", "sync"]
    env = {e["name"]: e for e in containers["keys"]["env"]}
    assert env["MODELPORT_PREDICTIONS_DB_URL"]["valueFrom"]["secretKeyRef"] == {"name": "predlog", "key": "url"}
    assert env["MODELPORT_PREDICTIONS_DB_PASSWORD_FILE"]["value"] == "/run/secrets/db_password"
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "houses-gateway"]
    assert "server-template r 1-16 houses-pods.${POD_NAMESPACE}.svc.cluster.local:8080" in config["data"]["haproxy.cfg"]
    assert set(config["data"]) == {"haproxy.cfg", "keys.map", "traffic.map", "versions.map"}
    (pods,) = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "houses-pods"]
    assert pods["spec"]["clusterIP"] == "None"
    (model,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "houses"]
    server = model["spec"]["template"]["spec"]["containers"][0]
    assert server["args"][:2] == ["serve", "houses:2"] and "--trust-proxy-headers" in server["args"]
    assert server["args"][server["args"].index("--log-db") + 1] == "$(MODELPORT_PREDICTIONS_DB_URL)"
    assert {e["name"] for e in server["env"]} == {"MODELPORT_PREDICTIONS_DB_URL", "MODELPORT_PREDICTIONS_DB_PASSWORD_FILE"}
    refused = helm("template", "r", str(chart), "--set", "gateway.enabled=true", "--set", "gateway.controlImage.tag=x", check=False)
    assert refused.returncode != 0 and "predictionLog.urlSecret.name" in refused.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["export", "houses", "--autoscale", "5:2"], "--autoscale 5:2"),
    (["export", "houses", "--autoscale", "lots"], "expected MIN:MAX"),
    (["export", "houses", "--canary", "mobilenet-v2:10"], "a canary is another version of the same model"),
    (["export", "houses:2", "--canary", "houses:2:10"], "the version already served"),
    (["export", "houses", "--canary", "houses:1:100"], "a percentage from 1 to 99"),
    (["export", "houses", "--cpu", "lots"], "a Kubernetes CPU quantity"),
    (["export", "houses", "--memory", "2 GB"], "a Kubernetes memory quantity"),
    (["export", "houses", "--namespace", "Prod_1"], "a Kubernetes name"),
    (["export", "nope"], "nope"),
    (["stack"], "is not a modelport stack"),
])
def test_bad_input_is_one_clear_message(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_in_process("k8s", *args, "-o", str(tmp_path / "out"), check=False)
    assert result.returncode == 1
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_validation_is_strict(tmp_path: Path) -> None:
    """The checks above would catch a wrong manifest: an unknown field, a wrong type."""
    import jsonschema

    k8s("export", "houses:1", "-o", tmp_path / "m")
    k8s("kserve", "houses:1", "-o", tmp_path / "k")
    (deployment,) = read_dir(tmp_path / "m")["deployment.yaml"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True  # belongs in securityContext
    with pytest.raises(jsonschema.ValidationError, match="readOnlyRootFilesystem"):
        validate([deployment])
    (isvc,) = read_dir(tmp_path / "k")["inferenceservice.yaml"]
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = "10"
    isvc["spec"]["predictor"]["containers"][0]["probes"] = {}
    with pytest.raises(AssertionError, match="unknown field 'probes'.*canaryTrafficPercent: '10' is not int"):
        validate([isvc])
    (monitor,) = read_dir(tmp_path / "m")["servicemonitor.yaml"]
    monitor["spec"]["endpoints"][0]["targetPort"] = "http"
    with pytest.raises(AssertionError, match="unknown fields"):
        validate([monitor])


@pytest.mark.parametrize(("model", "name"), [("iris", "iris"), ("my_model.v2", "my-model-v2"), ("3d-net", "model-3d-net")])
def test_model_names_become_kubernetes_names(model: str, name: str) -> None:
    from modelport.k8s.manifests import check_name, resource_name

    assert check_name(resource_name(model), "name") == name
