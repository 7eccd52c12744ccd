"""``build --platform``: the platform's name, its wheels' tags, and a context whose wheels are for it
(real downloads from the configured index, no engine). tests/container/test_arm64.py builds and runs one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from packaging.utils import parse_wheel_filename

import modelport
from modelport.container.wheelhouse import (
    WheelhouseError,
    build_wheelhouse,
    host_requirement,
    platform_tags,
    target_platform,
)
from modelport.errors import ModelportError
from tests.helpers import run_in_process


def test_platform_names_and_their_wheel_tags() -> None:
    assert target_platform("linux/arm64/v8") == target_platform("LINUX/AARCH64") == "linux/arm64"
    with pytest.raises(ModelportError, match="linux/amd64, linux/arm64"):
        target_platform("linux/s390x")
    tags = platform_tags("aarch64", (2, 36))
    assert tags[0] == "manylinux_2_36_aarch64"
    # manylinux2014 is glibc 2.17, the oldest aarch64 manylinux (lightgbm's only tag).
    assert {"manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"} <= set(tags)
    assert "manylinux_2_16_aarch64" not in tags and not [t for t in tags if "x86_64" in t]


def test_an_unknown_platform_is_refused_before_any_work(home: Path) -> None:
    modelport.save_model(_linear(), "lin")
    r = run_in_process("build", "lin", "--platform", "windows/amd64", check=False)
    assert r.returncode != 0 and "Traceback" not in r.stdout + r.stderr
    assert "Unsupported platform 'windows/amd64'" in r.stdout + r.stderr


def test_arm64_context_holds_aarch64_wheels_and_says_so(home: Path, tmp_path: Path) -> None:
    modelport.save_model(_linear(), "lin")
    ctx = tmp_path / "ctx"
    r = run_in_process("build", "lin", "--platform", "linux/arm64", "--context-only", str(ctx))
    assert f"docker build --platform linux/arm64 -t IMAGE {ctx}" in r.stdout
    compiled = {}
    for wheel in (ctx / "wheels").glob("*.whl"):
        name, _, _, tags = parse_wheel_filename(wheel.name)
        platforms = {t.platform for t in tags}
        assert platforms == {"any"} or all(p.endswith("_aarch64") for p in platforms), wheel.name
        if platforms != {"any"}:
            compiled[name] = platforms
    assert {"numpy", "scipy", "scikit-learn"} <= compiled.keys()
    assert 'io.modelport.platform="linux/arm64"' in (ctx / "Dockerfile").read_text()


def test_a_cross_built_context_installs_the_wheels_natively_and_checks_the_model_emulated(home: Path,
                                                                                          tmp_path: Path) -> None:
    modelport.save_model(_linear(), "lin")
    ctx = tmp_path / "ctx"
    r = run_in_process("build", "lin", "--platform", "linux/arm64", "--build-base-image", "amd64/python:3.11-slim",
                       "--context-only", str(ctx))
    assert f"docker build -t IMAGE {ctx}" in r.stdout  # no --platform: the build stage is the host's
    build, final = (ctx / "Dockerfile").read_text().split("# --- final stage")
    assert "FROM amd64/python:3.11-slim AS build" in build
    assert "--platform manylinux2014_aarch64" in build and "--target /opt/venv/lib/python3.11/site-packages" in build
    assert "--check" not in build  # aarch64 code cannot load on the build stage's amd64 Python
    assert final.index("COPY model /opt/modelport") < final.index('serve "lin:1" --check') < final.index("USER ")
    # Without a platform there is nothing to cross-build for.
    r = run_in_process("build", "lin", "--build-base-image", "amd64/python:3.11-slim", "--context-only",
                       str(tmp_path / "c2"), check=False)
    assert r.returncode != 0 and "Traceback" not in r.stdout + r.stderr and "needs a --platform" in r.stdout + r.stderr


def test_no_aarch64_wheel_names_the_requirement_and_the_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPORT_HOME", str(tmp_path / "home"))
    # numpy 2.4 publishes aarch64 wheels for glibc 2.27+ only.
    requirement = host_requirement("numpy")
    with pytest.raises(WheelhouseError, match=f"no binary wheel of {requirement} for CPython 3.11 on manylinux_2_17_aarch64"):
        build_wheelhouse([requirement], tmp_path / "wheels", platform="aarch64", glibc=(2, 17))


def _linear():
    from sklearn.linear_model import LinearRegression

    x = np.random.default_rng(0).normal(size=(40, 3))
    return LinearRegression().fit(x, x @ [1.0, 2.0, -1.0])


@pytest.mark.docker
def test_a_local_base_image_of_another_platform_is_refused_before_any_download(store) -> None:
    from modelport.container.build import build_image
    from tests.conftest import TEST_BASE_IMAGE  # linux/amd64

    modelport.save_model(_linear(), "lin", store=store)
    lines: list[str] = []
    with pytest.raises(ModelportError, match=f"base image {TEST_BASE_IMAGE} is linux/amd64, not linux/arm64"):
        build_image("lin", base_image=TEST_BASE_IMAGE, platform="linux/arm64", store=store, progress=lines.append)
    assert lines == []  # nothing written, nothing downloaded


@pytest.mark.docker
def test_a_cross_build_needs_its_base_image_here(store) -> None:
    from modelport.container.build import build_image
    from tests.conftest import TEST_BASE_IMAGE

    modelport.save_model(_linear(), "lin", store=store)
    lines: list[str] = []
    # Not here: the engine would pull it for its own platform (the build has no --platform), so it is refused.
    with pytest.raises(ModelportError, match="modelport-test/absent:arm64 is not here.*docker pull --platform linux/arm64"):
        build_image("lin", base_image="modelport-test/absent:arm64", platform="linux/arm64",
                    build_base_image=TEST_BASE_IMAGE, store=store, progress=lines.append)
    assert lines == []
