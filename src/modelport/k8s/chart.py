"""A Helm chart for a model: the chart kept in this package (chart/), with Chart.yaml and
values.yaml written from the model's metadata and the export options.

The chart renders the same objects as ``k8s export`` (tests/k8s compare them), plus the KServe
InferenceService (``kserve.enabled``) and the gateway (``gateway.enabled``) as options."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import modelport
from modelport.container.build import default_tag
from modelport.container.context import LIVE_PATH, READY_PATH, RUN_AS, SERVING_PORT
from modelport.errors import ModelportError
from modelport.k8s.manifests import TEMPLATES, ModelRelease, tmp_size

DEFAULT_CANARY_WEIGHT = 10


def chart_files(release: ModelRelease) -> dict[str, str]:
    """Chart.yaml and values.yaml for this model."""
    mv, options = release.stable, release.options
    tag = default_tag(mv)
    repository = tag.rpartition(":")[0]
    if options.registry:
        repository = f"{options.registry.rstrip('/')}/{repository}"
    versions = [mv, *([release.canary] if release.canary else [])]
    common = {"mv": mv, "name": release.name, "modelport_version": modelport.__version__}
    return {"Chart.yaml": TEMPLATES.get_template("Chart.yaml.j2").render(**common),
            "values.yaml": TEMPLATES.get_template("values.yaml.j2").render(
                **common, options=options, repository=repository, port=SERVING_PORT, uid=RUN_AS, ready_path=READY_PATH,
                live_path=LIVE_PATH, tmp_size=tmp_size(*versions), canary=release.canary,
                weight=release.canary_weight or DEFAULT_CANARY_WEIGHT)}


def write_chart(release: ModelRelease, dest: Path) -> Path:
    """The chart in ``dest`` (a new or empty directory)."""
    if dest.exists() and any(dest.iterdir()):
        raise ModelportError(f"{dest} is not empty: give a new or empty directory for the chart")
    source = resources.files("modelport.k8s") / "chart"
    with resources.as_file(source) as path:
        shutil.copytree(path, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in chart_files(release).items():
        (dest / name).write_text(text)
    # The gateway's HAProxy configuration, rendered as a stack's (one source), for the ConfigMap.
    from modelport.k8s.stack import PodLayout, pod_config

    (dest / "gateway").mkdir()
    for name, text in pod_config({release.stable.name: release.stable.version}, PodLayout(service_suffix="-pods")).items():
        (dest / "gateway" / name).write_text(text)
    return dest
