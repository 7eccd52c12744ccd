"""What a model image holds: its Python distributions, and which of them serving its model does not need.

Needed means: modelport, the requirements of its ``serve`` extra and of the model's framework (as the image's
own metadata declares them), and theirs, transitively. Anything else in the image (the command line's Typer,
Rich, Jinja2, httpx, the docker SDK, pip, SQLAlchemy...) is a failure."""

from __future__ import annotations

import json
from collections.abc import Callable

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from modelport.container.context import IMAGE_REQUIREMENTS, SERVE_EXTRA, cpu_build
from modelport.frameworks import get_adapter
from modelport.frameworks.base import IMAGE_CLASSIFICATION

# Run in the image: every distribution with its version and its declared requirements.
LIST_SCRIPT = ("import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: [d.version, d.requires or []] "
               "for d in m.distributions()}))")
# Never in a model image, whatever a dependency declares: what the command line and the builds use, and the
# store's database library (an image serves its own version without it; only a stack's model images, which
# write the prediction log, have SQLAlchemy).
NEVER = frozenset({"typer", "rich", "jinja2", "httpx", "httpcore", "docker", "swagger-ui-bundle", "pip", "setuptools",
                   "pyyaml", "pydantic", "pygments", "markdown-it-py", "requests", "sqlalchemy", "greenlet"})


def distributions(run_in_image: Callable[[list[str]], str]) -> dict[str, tuple[str, list[str]]]:
    """name (canonical) → (version, requirements) of every distribution in an image; ``run_in_image`` runs a
    command in it and returns its stdout."""
    listed = json.loads(run_in_image(["python3", "-c", LIST_SCRIPT]))
    return {canonicalize_name(name): (version, requires) for name, (version, requires) in listed.items()}


def needed(dists: dict[str, tuple[str, list[str]]], framework: str, task: str) -> set[str]:
    """The distributions serving a ``framework`` model of ``task`` needs, read from the image's own metadata."""
    roots = [Requirement(r) for r in dists["modelport"][1]
             if (m := Requirement(r).marker) is not None and m.evaluate({"extra": SERVE_EXTRA}) and not m.evaluate({"extra": ""})]
    names = [*get_adapter(framework).requirements, *(IMAGE_REQUIREMENTS if task == IMAGE_CLASSIFICATION else ())]
    roots += [Requirement(n) for n in names]
    seen = {"modelport"}
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name not in dists:  # e.g. xgboost, installed as its CPU build xgboost-cpu
            name = canonicalize_name(cpu_build(name, "99"))
        if name in seen or name not in dists:
            continue
        seen.add(name)
        for text in dists[name][1]:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(sub)
    return seen


def unneeded(dists: dict[str, tuple[str, list[str]]], framework: str, task: str) -> list[str]:
    """What an image holds beyond what serving its model needs, and anything of ``NEVER``."""
    return sorted((set(dists) - needed(dists, framework, task)) | (set(dists) & NEVER))
