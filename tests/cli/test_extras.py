"""A command that needs an extra says which one, before doing any work (issue 12 item 3). Each runs in a
Python holding modelport's core dependencies only (plus the extras a case names), like a fresh install."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import python_with_only


@pytest.fixture(scope="module")
def core_only(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return python_with_only(tmp_path_factory.mktemp("core-only"))


def run(python: list[str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*python, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=os.environ)


def assert_needs(out: subprocess.CompletedProcess[str], what: str, extra: str) -> None:
    assert out.returncode == 1, out
    assert out.stderr.startswith(f"Error: {what} needs "), out.stderr
    assert out.stderr.rstrip().endswith(f"pip install 'modelport[{extra}]'"), out.stderr


def test_train_without_the_train_extra(home: Path, core_only: list[str], regression_csv) -> None:
    csv, _, _ = regression_csv
    out = run(core_only, "train", "--data", str(csv), "--target", "target", "--name", "m")
    assert_needs(out, "Training", "train")
    assert "scikit-learn, skops, scipy, joblib, pandas" in out.stderr
    assert out.stdout == ""  # not even "Reading"
    assert_needs(run(core_only, "quickstart", "--no-serve"), "The quickstart", "train")


def test_docker_commands_without_the_docker_extra(home: Path, core_only: list[str], tmp_path: Path) -> None:
    assert_needs(run(core_only, "build", "m"), "Building an image", "docker")
    assert_needs(run(core_only, "build", "m", "--context-only", str(tmp_path / "ctx")), "Writing a build context", "docker")
    assert_needs(run(core_only, "ps"), "Talking to the Docker Engine", "docker")
    assert_needs(run(core_only, "stack", "init", str(tmp_path / "s"), "--model", "m"), "A stack", "docker")
    assert not (tmp_path / "ctx").exists() and not (tmp_path / "s").exists()


def test_stack_init_checks_the_postgres_driver_before_any_download(home: Path, tmp_path: Path) -> None:
    with_docker = python_with_only(tmp_path / "docker-only", ("docker",))
    out = run(with_docker, "stack", "init", str(tmp_path / "s"), "--model", "m")
    assert_needs(out, "A stack (its prediction log is in PostgreSQL)", "postgres")
    assert "psycopg" in out.stderr and out.stdout == ""
    assert not (tmp_path / "s").exists()


def test_serving_and_parquet_without_their_extras(home: Path, core_only: list[str], regression_csv, tmp_path: Path) -> None:
    from modelport.training.trainer import train

    train(regression_csv[0], "target", "m")  # here, with every extra
    assert_needs(run(core_only, "serve", "m", "--port", "1"), "Serving m", "sklearn")
    out = run(core_only, "predictions", "export", "--format", "parquet", "--db-url", f"sqlite:///{tmp_path}/p.db",
              "--output", str(tmp_path / "p.parquet"))
    assert_needs(out, "Parquet export", "parquet")
    assert not (tmp_path / "p.parquet").exists()


def test_imports_without_their_framework(home: Path, core_only: list[str], tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    (tmp_path / "m.pkl").write_bytes(b"\x80\x04N.")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    assert_needs(run(core_only, "import", "m", str(tmp_path / "m.onnx")), "Importing m.onnx (onnx)", "onnx")
    assert_needs(run(core_only, "import", "m", str(tmp_path / "m.pkl"), "--trust-pickle"), "Reading the pickle m.pkl", "sklearn")
    out = run(core_only, "import", "m", str(tmp_path / "m.onnx"), "--task", "image-classification", "--labels",
              str(tmp_path / "labels.txt"))
    assert_needs(out, "Importing an image classifier", "image")
    assert_needs(run(core_only, "pretrained", "mobilenet-v2"), "Registering an image classifier", "image")
