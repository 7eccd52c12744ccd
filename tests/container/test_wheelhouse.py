"""Wheelhouse: real downloads from the configured index, for CPython 3.11 on manylinux x86_64."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.utils import parse_wheel_filename

from modelport.container.wheelhouse import WheelhouseError, build_wheelhouse, host_requirement, platform_tags

PACKAGES = ["orjson", "numpy", "starlette"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MODELPORT_HOME, and so one pip cache, for the module's downloads."""
    return tmp_path_factory.mktemp("mp-home")


def build(home: Path, requirements: list[str], dest: Path, **kwargs) -> tuple[list[Path], list[str]]:
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELPORT_HOME", str(home))
        wheels = build_wheelhouse(requirements, dest, progress=lines.append, **kwargs)
    return wheels, lines


def test_host_requirement_pins_the_installed_version() -> None:
    import numpy

    assert host_requirement("numpy") == f"numpy=={numpy.__version__}"
    with pytest.raises(WheelhouseError, match="not installed"):
        host_requirement("modelport-no-such-dist")


def test_platform_tags_list_every_older_glibc() -> None:
    tags = platform_tags("x86_64", (2, 36))
    assert tags[0] == "manylinux_2_36_x86_64"
    assert {"manylinux_2_28_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_37_x86_64" not in tags
    assert "manylinux1_aarch64" not in platform_tags("aarch64", (2, 36))


def test_downloads_cp311_linux_wheels_pinned_to_the_host(home: Path, tmp_path: Path) -> None:
    requirements = [host_requirement(name) for name in PACKAGES]
    wheels, lines = build(home, requirements, tmp_path / "wheels")

    assert any(line.startswith("Saved ") for line in lines)
    found = {}
    for wheel in wheels:
        name, version, _, tags = parse_wheel_filename(wheel.name)
        found[name] = str(version)
        # Every wheel runs on CPython 3.11 with glibc 2.36: compiled for cp311 (or abi3), or pure Python.
        assert any(
            (t.interpreter, t.abi) in {("cp311", "cp311"), ("py3", "none")} or t.abi == "abi3" for t in tags
        ), wheel.name
        assert all(t.platform == "any" or t.platform in platform_tags() for t in tags), wheel.name
    assert {name: found[name] for name in PACKAGES} == {r.split("==")[0]: r.split("==")[1] for r in requirements}
    assert "anyio" in found  # dependencies come too


def test_missing_package_names_the_requirement(home: Path, tmp_path: Path) -> None:
    with pytest.raises(WheelhouseError) as err:
        build(home, ["modelport-no-such-package-xyz==1.0"], tmp_path / "wheels")
    assert err.value.requirement == "modelport-no-such-package-xyz==1.0"
    assert "no binary wheel of modelport-no-such-package-xyz==1.0 for CPython 3.11" in str(err.value)
    assert "No matching distribution" in err.value.output_tail


def test_no_wheel_for_an_older_glibc(home: Path, tmp_path: Path) -> None:
    # numpy 2.4 publishes x86_64 wheels for glibc 2.27+ only.
    requirement = host_requirement("numpy")
    with pytest.raises(WheelhouseError, match="manylinux_2_17_x86_64") as err:
        build(home, [requirement], tmp_path / "wheels", glibc=(2, 17))
    assert err.value.requirement == requirement
