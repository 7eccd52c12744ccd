"""Mistyped names get a suggestion, not just a refusal (issue 12 item 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

import modelport
from tests.helpers import free_port, run_in_process


@pytest.fixture
def houses(home: Path) -> None:
    x = np.random.default_rng(0).normal(size=(30, 2))
    modelport.save_model(LinearRegression().fit(x, x @ [1.0, 2.0]), "houses")


@pytest.mark.parametrize("args", [("models", "show", "housse:1"), ("serve", "housse", "--port", "0"),
                                  ("models", "tag", "housse", "production"), ("models", "rm", "-y", "housse")])
def test_a_mistyped_model_name_gets_a_suggestion(houses, args: tuple[str, ...]) -> None:
    args = tuple(str(free_port()) if a == "0" else a for a in args)
    out = run_in_process(*args, check=False)
    assert out.returncode == 1
    assert out.stderr.strip().endswith("No model 'housse' (did you mean 'houses'?)"), out.stderr
    assert out.stderr.startswith("Error: ") and "Traceback" not in out.stderr


def test_an_unlike_name_lists_the_models(houses) -> None:
    out = run_in_process("models", "show", "zebra", check=False)
    assert out.returncode == 1
    assert "No model named 'zebra' in the store (models: houses)" in out.stderr


@pytest.mark.parametrize("args", [("stack", "ps"), ("stack", "up"), ("stack", "logs"), ("stack", "rollback", "m")])
def test_stack_commands_outside_a_stack_suggest_its_directory_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     args: tuple[str, ...]) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "stack.json").write_text("{}")
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    out = run_in_process(*args, check=False)
    assert out.returncode == 1
    message = " ".join(out.stderr.split())
    assert f"{tmp_path} is not a modelport stack" in message
    assert "name it with -C DIR (--dir DIR) (stacks here: -C shop)" in message, message
    assert "Traceback" not in out.stderr


def test_outside_any_stack_the_option_is_still_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = run_in_process("stack", "ps", check=False)
    assert out.returncode == 1
    assert "-C DIR (--dir DIR); create one with" in " ".join(out.stderr.split())
