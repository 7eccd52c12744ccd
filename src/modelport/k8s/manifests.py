"""Kubernetes manifests for a model image: a Deployment per track (stable, and a canary beside it),
a Service, a HorizontalPodAutoscaler, a PodDisruptionBudget and a Prometheus Operator ServiceMonitor;
and a KServe InferenceService for the same image.

Everything a manifest says about the container (port, probe paths, user, writable path, command)
is what the image built by ``modelport build`` does (modelport.container.context); labels and
annotations come from the model's metadata, so ``kubectl get pods -l modelport.io/model=NAME``
and the sha256 annotation tell what a pod serves.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

import modelport
from modelport.container.build import default_tag
from modelport.container.context import LIVE_PATH, READY_PATH, RUN_AS, SERVING_PORT, WRITABLE_PATH
from modelport.errors import ModelportError
from modelport.store import ModelStore, ModelVersion

TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("modelport.k8s", "templates"), keep_trailing_newline=True,
                               undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _block(mapping: dict[str, str], indent: int) -> str:
    """A mapping of strings as a YAML block at ``indent`` (keys are modelport's own label names;
    values are quoted as JSON, which YAML reads as the same strings)."""
    return "".join(f"\n{' ' * indent}{key}: {json.dumps(value)}" for key, value in mapping.items())


TEMPLATES.filters["block"] = _block
LABEL = "modelport.io"
# Quantities as Kubernetes writes them: 500m, 1, 1.5 (CPU); 512Mi, 1Gi, 1G (memory).
_CPU = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
TMP_HEADROOM_MIB = 64  # /tmp beyond the copies of the model's files that workers load


@dataclass(frozen=True)
class Options:
    """How to run a model on Kubernetes; the CLI's options, checked."""

    replicas: int = 2
    autoscale: tuple[int, int] | None = None  # (min, max); None: a fixed number of replicas
    namespace: str | None = None
    cpu: str = "1"
    memory: str = "1Gi"
    registry: str | None = None  # where the cluster pulls images from: REGISTRY/modelport/NAME:VERSION
    cpu_target: int = 70  # the autoscaler's target CPU utilisation, percent of the request

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ModelportError(f"--replicas {self.replicas}: at least 1")
        if self.autoscale:
            low, high = self.autoscale
            if not 1 <= low <= high:
                raise ModelportError(f"--autoscale {low}:{high}: expected MIN:MAX with 1 <= MIN <= MAX")
        if not _CPU.match(self.cpu):
            raise ModelportError(f"--cpu {self.cpu!r}: a Kubernetes CPU quantity such as 500m, 1 or 2")
        if not _MEMORY.match(self.memory):
            raise ModelportError(f"--memory {self.memory!r}: a Kubernetes memory quantity such as 512Mi or 2Gi")
        if self.namespace is not None:
            check_name(self.namespace, "--namespace")

    @property
    def min_replicas(self) -> int:
        return self.autoscale[0] if self.autoscale else self.replicas


def parse_autoscale(text: str | None, replicas: int) -> tuple[int, int] | None:
    """``MIN:MAX`` → (MIN, MAX); ``off`` → None (a fixed number of replicas); None → the default,
    ``replicas`` to four times as many."""
    if text is None:
        return replicas, replicas * 4
    if text == "off":
        return None
    low, sep, high = text.partition(":")
    if not (sep and low.isdigit() and high.isdigit()):
        raise ModelportError(f"--autoscale {text!r}: expected MIN:MAX, e.g. 2:10")
    return int(low), int(high)


def parse_canary(text: str) -> tuple[str, int]:
    """``REF:PERCENT`` (REF may itself be NAME:VERSION) → (REF, PERCENT)."""
    ref, sep, weight = text.rpartition(":")
    if not (sep and ref and weight.isdigit() and 1 <= int(weight) <= 99):
        raise ModelportError(f"--canary {text!r}: expected REF:PERCENT with a percentage from 1 to 99, e.g. houses:3:10")
    return ref, int(weight)


def check_name(name: str, what: str) -> str:
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise ModelportError(f"{what} {name!r}: a Kubernetes name is lowercase letters, digits and '-', "
                             "starting with a letter, at most 63 characters")
    return name


def resource_name(model: str) -> str:
    """A Kubernetes name for a model (a Service's is a DNS label that starts with a letter); model
    names may hold '.' and '_', and start with a digit."""
    name = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    if not name[:1].isalpha():
        name = f"model-{name}"
    return name[:50].rstrip("-")  # room for the suffixes: -canary, -gateway


def image_of(mv: ModelVersion, registry: str | None) -> str:
    """The tag ``modelport build`` gives the image, under the registry the cluster pulls from."""
    return f"{registry.rstrip('/')}/{default_tag(mv)}" if registry else default_tag(mv)


def tmp_size(*versions: ModelVersion) -> str:
    """/tmp's size limit: with several workers the server copies the model's files there."""
    total = max(sum(f.size for f in mv.files.values()) for mv in versions)
    return f"{math.ceil(total / 2**20) + TMP_HEADROOM_MIB}Mi"


def common_labels(name: str, component: str = "model") -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name, "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "modelport", "app.kubernetes.io/managed-by": "modelport"}


def model_labels(mv: ModelVersion) -> dict[str, str]:
    """What a pod serves, as labels (values of at most 63 characters: the sha256 is an annotation)."""
    return {"app.kubernetes.io/version": str(mv.version), f"{LABEL}/model": resource_name(mv.name),
            f"{LABEL}/version": str(mv.version), f"{LABEL}/framework": mv.framework}


def model_annotations(mv: ModelVersion) -> dict[str, str]:
    return {f"{LABEL}/model": mv.name, f"{LABEL}/version": str(mv.version), f"{LABEL}/sha256": mv.digest,
            f"{LABEL}/framework": mv.framework, f"{LABEL}/task": mv.task,
            f"{LABEL}/modelport-version": modelport.__version__}


@dataclass
class Track:
    """One Deployment: a model version's pods, the stable ones or the canary."""

    name: str
    ref: str
    image: str
    selector: dict[str, str]
    labels: dict[str, str]
    annotations: dict[str, str]
    replicas: int | None
    cpu: str
    memory: str


@dataclass(frozen=True)
class PredictionLog:
    """A stack model's servers write the prediction log: ``db_url`` (no password: the file from the
    Secret ``secret``), records spooled on an emptyDir while the database is unavailable."""

    db_url: str
    secret: str
    spool: str
    command: Callable[[str], list[str]]  # the version's ref → the server's arguments


@dataclass
class ModelRelease:
    """A model as Kubernetes runs it: its stable version and, maybe, a canary version."""

    stable: ModelVersion
    options: Options = field(default_factory=Options)
    canary: ModelVersion | None = None
    canary_weight: int = 0
    log: PredictionLog | None = None  # a stack's model: behind its HAProxy gateway, found per pod (headless)

    def __post_init__(self) -> None:
        if self.canary is not None:
            if self.canary.name != self.stable.name:
                raise ModelportError(f"The canary {self.canary.ref} is another model than {self.stable.ref}: "
                                     "a canary is another version of the same model")
            if self.canary.version == self.stable.version:
                raise ModelportError(f"The canary is {self.canary.ref}, the version already served")

    @property
    def name(self) -> str:
        return resource_name(self.stable.name)

    @property
    def canary_replicas(self) -> int:
        """A plain Service splits requests by pod: the canary's share of the pods is its weight, at least one pod."""
        stable = self.options.min_replicas
        return max(1, round(stable * self.canary_weight / (100 - self.canary_weight)))

    def tracks(self) -> list[Track]:
        base = common_labels(self.name)
        found = [(self.stable, "stable", self.name)]
        if self.canary is not None:
            found.append((self.canary, "canary", f"{self.name}-canary"))
        tracks = []
        for mv, track, name in found:
            selector = {**{k: base[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")},
                        f"{LABEL}/track": track}
            replicas = self.canary_replicas if track == "canary" else None if self.options.autoscale else self.options.replicas
            annotations = model_annotations(mv)
            if track == "canary":
                annotations[f"{LABEL}/canary-weight"] = str(self.canary_weight)
            tracks.append(Track(name, mv.ref, image_of(mv, self.options.registry), selector,
                                {**base, **model_labels(mv), f"{LABEL}/track": track}, annotations, replicas,
                                self.options.cpu, self.options.memory))
        return tracks

    def _context(self) -> dict:
        labels = common_labels(self.name)
        return {"name": self.name, "namespace": self.options.namespace, "labels": {**labels, f"{LABEL}/model": self.name},
                "annotations": {f"{LABEL}/model": self.stable.name},
                "selector": {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")},
                "port": SERVING_PORT}

    def manifests(self) -> dict[str, str]:
        """File name → YAML, one file per kind, in the order to apply them."""
        versions = [self.stable, *([self.canary] if self.canary else [])]
        writable = [{"name": "tmp", "path": WRITABLE_PATH, "size": tmp_size(*versions),
                     "why": "the only writable path: temporary files, the workers' copies of the model, metrics"}]
        if self.log is not None:
            writable.append({"name": "spool", "path": self.log.spool, "size": "1Gi",
                             "why": "records wait here while the database is unavailable: lost if the pod is deleted"})
        ctx = self._context()
        deployments = [TEMPLATES.get_template("model.yaml.j2").render(
            d=t, namespace=self.options.namespace, port=SERVING_PORT, uid=RUN_AS, ready_path=READY_PATH,
            live_path=LIVE_PATH, writable=writable, log=self.log,
            args=self.log.command(t.ref) if self.log else None) for t in self.tracks()]
        files = {"deployment.yaml": "---\n".join(deployments),
                 "service.yaml": TEMPLATES.get_template("service.yaml.j2").render(**ctx, headless=self.log is not None),
                 "pdb.yaml": TEMPLATES.get_template("pdb.yaml.j2").render(**ctx),
                 "servicemonitor.yaml": TEMPLATES.get_template("servicemonitor.yaml.j2").render(**ctx)}
        if self.options.autoscale:
            low, high = self.options.autoscale
            files["hpa.yaml"] = TEMPLATES.get_template("hpa.yaml.j2").render(
                **ctx, target=self.name, min=low, max=high, cpu_percent=self.options.cpu_target)
        return {k: _header(self, k) + v for k, v in files.items()}

    def inference_service(self) -> dict[str, str]:
        """KServe: the InferenceService of the stable version and, with a canary, the same resource
        updated to the canary version with ``canaryTrafficPercent`` (KServe keeps the previous
        revision for the rest of the traffic)."""
        low, high = self.options.autoscale or (self.options.replicas, self.options.replicas)
        files = {}
        for mv, percent, file in [(self.stable, None, "inferenceservice.yaml"),
                                  *([(self.canary, self.canary_weight, "inferenceservice-canary.yaml")] if self.canary else [])]:
            files[file] = _header(self, file) + TEMPLATES.get_template("inferenceservice.yaml.j2").render(
                name=self.name, namespace=self.options.namespace, image=image_of(mv, self.options.registry),
                labels={**common_labels(self.name), **model_labels(mv)}, annotations=model_annotations(mv),
                canary=percent, min=low, max=high, cpu=self.options.cpu, memory=self.options.memory, port=SERVING_PORT,
                uid=RUN_AS, ready_path=READY_PATH, live_path=LIVE_PATH, tmp=WRITABLE_PATH, tmp_size=tmp_size(mv), ref=mv.ref)
        return files


def _header(release: ModelRelease, file: str) -> str:
    canary = f", canary {release.canary.ref} ({release.canary_weight}%)" if release.canary else ""
    return (f"# Generated by modelport {modelport.__version__} for {release.stable.ref} "
            f"(sha256 {release.stable.digest[:12]}…){canary}: {file}\n")


def write(files: dict[str, str], dest: Path) -> list[Path]:
    """Write generated files into ``dest`` (created), refusing to overwrite other files. Files an
    earlier export wrote there and this one does not (an hpa.yaml before --autoscale off) go:
    ``kubectl apply -f DIR`` applies what is in the directory."""
    dest.mkdir(parents=True, exist_ok=True)
    clashes = [name for name in files if (dest / name).exists() and not _generated(dest / name)]
    if clashes:
        raise ModelportError(f"{dest} holds files modelport did not write: {', '.join(clashes)}; give another directory")
    for stale in dest.rglob("*.yaml"):
        if str(stale.relative_to(dest)) not in files and _generated(stale):
            stale.unlink()
    paths = []
    for name, text in files.items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(path)
    return paths


def _generated(path: Path) -> bool:
    try:
        return path.read_text().startswith("# Generated by modelport")
    except (OSError, UnicodeDecodeError):
        return False


def release(ref: str, options: Options | None = None, *, canary: str | None = None,
            store: ModelStore | None = None) -> ModelRelease:
    """The model ``ref`` from the store, with ``canary`` (``REF:PERCENT``) beside it."""
    from modelport.api import get_store

    store = get_store(store)
    stable = store.resolve(ref)
    if canary is None:
        return ModelRelease(stable, options or Options())
    canary_ref, weight = parse_canary(canary)
    return ModelRelease(stable, options or Options(), store.resolve(canary_ref), weight)
