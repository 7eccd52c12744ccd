"""`modelport build` from a virtual environment holding only what the README installs (issue 12,
item 1): a fresh venv has setuptools 65 and no `wheel`, which cannot build modelport's wheel in place.

The venv is created fresh and modelport is pip-installed into it as the README says; its dependencies
(those of modelport[train,docker], which pip would unpack there for a minute) are linked from this
Python's site-packages instead: the same versions, metadata included (`pip check` holds), and never
setuptools, wheel or pip, so the venv's own build tools are still the fresh ones."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import link_dependencies

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def leaves_the_tree_as_it_was() -> Iterator[None]:
    """`pip install -e` writes src/modelport.egg-info into the repository: removed again if it was not there."""
    egg_info = ROOT / "src" / "modelport.egg-info"
    existed = egg_info.exists()
    yield
    if not existed:
        shutil.rmtree(egg_info, ignore_errors=True)


@pytest.mark.long
def test_build_context_from_a_fresh_venv(tmp_path: Path, leaves_the_tree_as_it_was: None) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_ = venv / "bin"
    env = {**os.environ, "MODELPORT_HOME": str(tmp_path / "home"), "PATH": f"{bin_}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)
        assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    # The README's steps: the quickstart's install, then the Containers section's extra (its dependencies
    # linked first, so pip finds them installed).
    site = Path(run(str(bin_ / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    linked = link_dependencies(site, ("train", "docker"))
    assert {"scikit-learn", "pandas", "docker"} <= linked and not linked & {"setuptools", "wheel", "pip"}, linked
    install = run(str(bin_ / "pip"), "install", "-e", f"{ROOT}[train,docker]", timeout=1200)
    assert "Successfully installed modelport" in install.stdout, install.stdout[-3000:]
    run(str(bin_ / "pip"), "check")  # every requirement of what is installed is met
    can_build_in_place = run(str(bin_ / "python"), "-c",
                             "from modelport.container.context import _can_build_wheels_here as f; print(f())")
    assert can_build_in_place.stdout.strip() == "False"  # the environment the defect needs
    run(str(bin_ / "modelport"), "quickstart", "--no-serve")
    run(str(bin_ / "modelport"), "build", "diabetes", "--context-only", str(tmp_path / "context"))
    (wheel,) = (tmp_path / "context" / "wheels").glob("modelport-*.whl")
    assert wheel.stat().st_size > 10_000
