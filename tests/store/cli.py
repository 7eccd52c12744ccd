"""Run the ``modelport`` command in this process, as a person would see it."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> CliResult:
    from modelport.cli.main import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["modelport", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)
