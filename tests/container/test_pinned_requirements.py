"""The control and training images' pins: modelport's own requirements, self-references expanded."""

from __future__ import annotations

from modelport.container.training import TRAIN_EXTRAS, pinned_requirements
from modelport.deploy.stack import CONTROL_EXTRAS

# As pyproject declares them: the core names two extras of modelport's own, an extra names another.
REQUIRES = [
    "modelport[serve,cli]",
    'numpy~=2.4; extra == "serve"',
    'typer~=0.29; extra == "cli"',
    'scikit-learn~=1.9; extra == "sklearn"',
    'modelport[sklearn]; extra == "train"',
    'pandas~=3.1; extra == "train"',
    'docker~=7.1; extra == "docker"',
    'pyarrow~=26.0; extra == "parquet"',
]


def names(pins: list[str]) -> set[str]:
    return {p.split("==")[0].lower() for p in pins}


def test_the_core_s_extras_and_an_extra_s_extras_are_expanded() -> None:
    assert names(pinned_requirements(REQUIRES, TRAIN_EXTRAS)) == {"numpy", "typer", "scikit-learn", "pandas"}
    assert names(pinned_requirements(REQUIRES, ("docker",))) == {"numpy", "typer", "docker"}


def test_the_control_image_gets_the_command_line_it_runs() -> None:
    from importlib import metadata

    pins = names(pinned_requirements(metadata.requires("modelport") or [], CONTROL_EXTRAS))
    assert {"typer", "rich", "jinja2", "httpx", "numpy", "starlette", "docker", "psycopg[binary]"} <= pins
