"""A command that needs an extra says which one, before doing any work (issue 12 item 3). Each runs in a
Python holding modelport's core dependencies only (plus the extras a case names), like a fresh install."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import python_with_only

# The commands of one test in one interpreter of that environment, one after the other, each with its own
# output and exit status: a missing extra is missing for every one of them (what they import cannot add it).
_COMMANDS = """
import contextlib, io, json, sys
from modelport.cli.main import main
answers = []
for argv in json.loads(sys.argv[1]):
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    answers.append([code, out.getvalue(), err.getvalue()])
sys.__stdout__.write(json.dumps(answers))
"""


@pytest.fixture(scope="module")
def core_only(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return python_with_only(tmp_path_factory.mktemp("core-only"), script=_COMMANDS)


def run(python: list[str], *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Each of ``commands`` (modelport's arguments) run by ``python``, in one process."""
    proc = subprocess.run([*python, json.dumps(commands)], capture_output=True, text=True, timeout=120, env=os.environ)
    assert proc.returncode == 0, proc
    return [subprocess.CompletedProcess(["modelport", *argv], code, out, err)
            for argv, (code, out, err) in zip(commands, json.loads(proc.stdout), strict=True)]


def assert_needs(out: subprocess.CompletedProcess[str], what: str, extra: str) -> None:
    assert out.returncode == 1, out
    assert out.stderr.startswith(f"Error: {what} needs "), out.stderr
    assert out.stderr.rstrip().endswith(f"pip install 'modelport[{extra}]'"), out.stderr


def test_train_without_the_train_extra(home: Path, core_only: list[str], regression_csv) -> None:
    csv, _, _ = regression_csv
    out, quickstart = run(core_only, ["train", "--data", str(csv), "--target", "target", "--name", "m"], ["quickstart", "--no-serve"])
    assert_needs(out, "Training", "train")
    assert "scikit-learn, skops, scipy, joblib, pandas" in out.stderr
    assert out.stdout == ""  # not even "Reading"
    assert_needs(quickstart, "The quickstart", "train")


def test_docker_commands_without_the_docker_extra(home: Path, core_only: list[str], tmp_path: Path) -> None:
    build, context, ps, stack = run(core_only, ["build", "m"], ["build", "m", "--context-only", str(tmp_path / "ctx")], ["ps"],
                                    ["stack", "init", str(tmp_path / "s"), "--model", "m"])
    assert_needs(build, "Building an image", "docker")
    assert_needs(context, "Writing a build context", "docker")
    assert_needs(ps, "Talking to the Docker Engine", "docker")
    assert_needs(stack, "A stack", "docker")
    assert not (tmp_path / "ctx").exists() and not (tmp_path / "s").exists()


def test_stack_init_checks_the_postgres_driver_before_any_download(home: Path, tmp_path: Path) -> None:
    with_docker = python_with_only(tmp_path / "docker-only", ("docker",), script=_COMMANDS)
    (out,) = run(with_docker, ["stack", "init", str(tmp_path / "s"), "--model", "m"])
    assert_needs(out, "A stack (its control image has modelport with the postgres and docker extras)", "postgres")
    assert "psycopg" in out.stderr and out.stdout == ""
    assert not (tmp_path / "s").exists()


def test_serving_and_parquet_without_their_extras(home: Path, core_only: list[str], regression_csv, tmp_path: Path) -> None:
    from modelport.training.trainer import train

    train(regression_csv[0], "target", "m")  # here, with every extra
    serve, export = run(core_only, ["serve", "m", "--port", "1"],
                        ["predictions", "export", "--format", "parquet", "--db-url", f"sqlite:///{tmp_path}/p.db",
                         "--output", str(tmp_path / "p.parquet")])
    assert_needs(serve, "Serving m", "sklearn")
    assert_needs(export, "Parquet export", "parquet")
    assert not (tmp_path / "p.parquet").exists()


def test_imports_without_their_framework(home: Path, core_only: list[str], tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    (tmp_path / "m.pkl").write_bytes(b"\x80\x04N.")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    onnx, pickle, image, pretrained = run(
        core_only, ["import", "m", str(tmp_path / "m.onnx")], ["import", "m", str(tmp_path / "m.pkl"), "--trust-pickle"],
        ["import", "m", str(tmp_path / "m.onnx"), "--task", "image-classification", "--labels", str(tmp_path / "labels.txt")],
        ["pretrained", "mobilenet-v2"])
    assert_needs(onnx, "Importing m.onnx (onnx)", "onnx")
    assert_needs(pickle, "Reading the pickle m.pkl", "sklearn")
    assert_needs(image, "Importing an image classifier", "image")
    assert_needs(pretrained, "Registering an image classifier", "image")
