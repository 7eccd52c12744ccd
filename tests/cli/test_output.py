"""The CLI prints messages verbatim: square brackets are text, not Rich markup (issue 12 item 2)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelport.cli.main import app, main


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """``modelport ARGS`` through the real entry point (its error handling included), in this process."""
    monkeypatch.setattr(sys, "argv", ["modelport", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code


def test_errors_keep_square_brackets(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    code = run_main(monkeypatch, "models", "show", "pip[docker]")
    err = capsys.readouterr().err
    assert code == 1
    assert "Error: Invalid model name 'pip[docker]'" in " ".join(err.split()), err


def test_progress_and_results_keep_square_brackets(home: Path, regression_csv, tmp_path: Path) -> None:
    csv, _, _ = regression_csv
    odd = tmp_path / "[docker]" / "[bold]data.csv"
    odd.parent.mkdir()
    csv.rename(odd)
    out = CliRunner().invoke(app, ["train", "--data", str(odd), "--target", "target", "--name", "m"])
    assert out.exit_code == 0, out.output
    assert f"Reading {odd}" in out.output
    bundle = tmp_path / "[docker]" / "m[1].tar.gz"
    out = CliRunner().invoke(app, ["models", "export", "m:1", str(bundle)])
    assert out.exit_code == 0, out.output
    assert f"Exported m:1 to {bundle}" in " ".join(out.output.split())
