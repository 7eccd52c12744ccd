"""Per-system virtual environments under ``bench/.venvs/NAME``, built once and cached."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from shutil import rmtree

from bench.errors import BenchError

VENVS = Path(__file__).resolve().parent / ".venvs"
MARKER = "bench-pins.txt"


@dataclass(frozen=True)
class VenvSpec:
    name: str
    pins: tuple[str, ...]
    # Peers unpickle the harness's model, so they get the harness's exact
    # scikit-learn/numpy: a mismatch would warn or even predict differently.
    model_stack: bool = True

    def all_pins(self) -> tuple[str, ...]:
        return (*self.pins, *model_stack()) if self.model_stack else self.pins


def model_stack() -> tuple[str, ...]:
    pins = []
    for dist in ("scikit-learn", "numpy"):
        try:
            pins.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            raise BenchError(
                f"{dist} is not installed in {sys.executable}; the harness needs it to train the model"
            ) from None
    return tuple(pins)


def python_of(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def ensure(spec: VenvSpec) -> Path:
    """Return the venv's interpreter, (re)building the venv unless its marker matches the pins."""
    root = VENVS / spec.name
    python = python_of(spec.name)
    # The marker also names the base interpreter: a new Python means a rebuild.
    want = "\n".join([f"python {sys.version.split()[0]} {sys.base_prefix}", *spec.all_pins()]) + "\n"
    marker = root / MARKER
    if python.exists() and marker.exists() and marker.read_text() == want:
        return python
    print(f"[venv] {spec.name}: installing {' '.join(spec.all_pins())}", flush=True)
    start = time.monotonic()
    rmtree(root, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(root)], spec.name)
    # Output is inherited so pip's own progress is what the user sees.
    _run([str(python), "-m", "pip", "install", "--progress-bar", "on", *spec.all_pins()], spec.name)
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    (root / "freeze.txt").write_text(freeze)
    marker.write_text(want)  # written last, so an interrupted install is redone
    print(f"[venv] {spec.name}: ready in {time.monotonic() - start:.0f}s", flush=True)
    return python


def _run(argv: list[str], name: str) -> None:
    if subprocess.run(argv).returncode != 0:
        raise BenchError(f"venv {name}: `{' '.join(argv)}` failed (see output above)")
