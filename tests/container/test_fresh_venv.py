"""`modelport build` from a virtual environment holding only what the README installs (issue 12,
item 1): a fresh venv has setuptools 65 and no `wheel`, which cannot build modelport's wheel in place."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_build_context_from_a_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_ = venv / "bin"
    env = {**os.environ, "MODELPORT_HOME": str(tmp_path / "home"), "PATH": f"{bin_}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)
        assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    # The README's steps: the quickstart's install, then the Containers section's extra.
    run(str(bin_ / "pip"), "install", "--quiet", "-e", f"{ROOT}[train,docker]", timeout=1200)
    can_build_in_place = run(str(bin_ / "python"), "-c",
                             "from modelport.container.context import _can_build_wheels_here as f; print(f())")
    assert can_build_in_place.stdout.strip() == "False"  # the environment the defect needs
    run(str(bin_ / "modelport"), "quickstart", "--no-serve")
    run(str(bin_ / "modelport"), "build", "diabetes", "--context-only", str(tmp_path / "context"))
    (wheel,) = (tmp_path / "context" / "wheels").glob("modelport-*.whl")
    assert wheel.stat().st_size > 10_000
