"""The CLI prints messages verbatim: square brackets are text, not Rich markup (issue 12 item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelport.cli.main import app
from tests.helpers import run_in_process


def test_errors_keep_square_brackets(home: Path) -> None:
    out = run_in_process("models", "show", "pip[docker]", check=False)
    assert out.returncode == 1
    assert "Error: Invalid model name 'pip[docker]'" in out.stderr, out.stderr


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


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_texts_survive_rich_markup() -> None:
    """Typer renders --help with Rich markup: a help text with e.g. "[@VERSION]" would lose it."""
    from rich.markup import render
    from typer.main import get_command

    texts = []
    for path, command in _commands(get_command(app)):
        texts += [(path, command.help)] + [(path, p.help) for p in command.params if getattr(p, "help", None)]
    changed = [(" ".join(path), t) for path, t in texts if t and render(t).plain != t]
    assert not changed


def test_long_commands_show_their_steps_and_keep_tool_output_in_a_log(home: Path, capsys: pytest.CaptureFixture) -> None:
    from modelport.cli.output import LoggedProgress
    from modelport.errors import ModelportError
    from modelport.progress import ToolOutput

    lines = ["Building the modelport wheel", ToolOutput("Collecting numpy==2.4.1"), "Step 2/9 : RUN pip install",
             ToolOutput(" ---> Running in 3f2a")]
    with pytest.raises(ModelportError) as failure, LoggedProgress("build") as log:
        for line in lines:
            log(line)
        raise ModelportError("Image build failed at Step 2/9")
    shown = capsys.readouterr().out
    assert "Building the modelport wheel" in shown and "Step 2/9" in shown
    assert "Collecting" not in shown and "Running in" not in shown
    message, path = str(failure.value).split("\nFull log: ")
    assert message == "Image build failed at Step 2/9"
    assert Path(path).read_text().splitlines() == lines

    with LoggedProgress("build") as log:  # a success leaves no log behind
        log(ToolOutput("Successfully built"))
    assert not log.path.exists()


def test_a_long_command_is_printed_on_one_line(capsys: pytest.CaptureFixture) -> None:
    """A curl printed for the user to copy is never hard-wrapped at the terminal's width (80 here)."""
    from modelport.cli.output import console, progress

    line = ("curl -X POST http://127.0.0.1:8080/predict -H 'Content-Type: application/json' "
            "-d '{\"features\": [120.5, 4, 12, 3.2]}'")
    assert console.width <= 80 < len(line)
    progress(line)
    assert capsys.readouterr().out == f"  {line}\n"
