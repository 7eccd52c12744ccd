"""Listings read well in 80 columns and in a pipe: one line a row, no name cut short, --json everywhere
(issue 12 item 9), like ``docker ps`` and ``kubectl get``."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from sklearn.linear_model import LinearRegression
from typer.testing import CliRunner

import modelport
from modelport.cli import output
from modelport.cli.main import app

LONG = "residential-property-valuation-model"
NARROW = {"COLUMNS": "80", "LINES": "25"}


def _run(*args: str) -> str:
    out = CliRunner().invoke(app, list(args), env=NARROW)
    assert out.exit_code == 0, out.output
    return out.stdout


def _row(text: str, first: str) -> list[str]:
    """The whitespace-separated cells of the one line starting with ``first``."""
    [line] = [line for line in text.splitlines() if line.startswith(first)]
    return line.split()


def test_models_list_piped_is_plain_columns(home: Path) -> None:
    x = np.random.default_rng(0).normal(size=(30, 2))
    mv = modelport.save_model(LinearRegression().fit(x, x @ [1.0, 2.0]), LONG)
    modelport.get_store().set_alias(mv.ref, "production")
    modelport.get_store().set_alias(mv.ref, "staging")
    text = _run("models", "list")
    assert _row(text, "NAME") == ["NAME", "LATEST", "VERSIONS", "FRAMEWORK", "TASK", "ALIASES", "UPDATED"]
    assert _row(text, LONG)[:6] == [LONG, "1", "1", "sklearn", mv.task, "production→1,staging→1"]
    assert "…" not in text and "│" not in text and len(text.splitlines()) == 2
    assert json.loads(_run("models", "list", "--json"))[0]["name"] == LONG


def test_predictions_list_is_one_line_a_row(tmp_path: Path) -> None:
    from modelport.predlog.db import make_engine
    from modelport.predlog.record import PredictionRecord
    from modelport.predlog.writer import create_schema, insert_rows, to_row

    db = f"sqlite:///{tmp_path / 'log.db'}"
    engine = make_engine(db)
    create_schema(engine)
    body = json.dumps({"features": [0.0380759064, 0.0506801187, 0.0616962065, 0.0218723549, -0.0442234984]})
    insert_rows(engine, [to_row(PredictionRecord(datetime.now(UTC), f"req-{i}", None, LONG, "3", body.encode(),
                                                 b'{"prediction": 151.00818}', "application/json", 1.5, 200))
                         for i in range(3)])
    text = _run("predictions", "list", "--db-url", db)
    assert len(text.splitlines()) == 4  # the header and a line for each
    [cells] = [line.split() for line in text.splitlines() if "req-2" in line]
    assert cells[1:6] == ["req-2", "-", f"{LONG}:3", "200", "1.5"]
    assert [r["request_id"] for r in json.loads(_run("predictions", "list", "--db-url", db, "--json"))] == \
        ["req-2", "req-1", "req-0"]
    assert _row(_run("predictions", "stats", "--db-url", db), LONG)[:4] == [LONG, "3", "3", "0"]


def test_keys_list_names_are_whole(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    name = "nightly-batch-scoring-job-for-the-valuation-team"
    _run("stack", "keys", "create", name, "--db-url", db)
    text = _run("stack", "keys", "list", "--db-url", db)
    [key] = json.loads(_run("stack", "keys", "list", "--db-url", db, "--json"))
    assert _row(text, key["id"])[:2] == [key["id"], name]


@pytest.mark.docker
def test_ps_shows_whole_names() -> None:
    import uuid

    import docker

    from tests.conftest import TEST_BASE_IMAGE
    from tests.helpers import free_port

    client, port, name = docker.from_env(), free_port(), f"{LONG}-{uuid.uuid4().hex[:8]}"
    labels = {"io.modelport.managed": "true", "io.modelport.service": name, "io.modelport.role": "gateway"}
    container = client.containers.run(TEST_BASE_IMAGE, ["sleep", "300"], name=name, detach=True, labels=labels,
                                       ports={"8080/tcp": ("127.0.0.1", port)})
    try:
        text = _run("ps")
        assert _row(text, "SERVICE")[:3] == ["SERVICE", "ROLE", "NAME"]
        assert _row(text, name)[:9] == [name, "gateway", name, "-", "running", "-", "-", "-",
                                        f"127.0.0.1:{port}->8080/tcp"]
        assert any(r["name"] == name for r in json.loads(_run("ps", "--json")))
    finally:
        container.remove(force=True)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Standard output as an 80-column terminal."""
    screen = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=screen, force_terminal=True, width=80, markup=False,
                                                   highlight=False, emoji=False, soft_wrap=True))
    return screen


def test_in_a_terminal_a_table_that_fits_is_drawn(terminal: io.StringIO) -> None:
    output.table(("SERVICE", "ROLE"), [("houses", "gateway")])
    lines = [line for line in terminal.getvalue().splitlines() if line.strip()]
    assert "SERVICE" in lines[0] and "houses" in lines[-1] and "gateway" in lines[-1]


def test_in_a_terminal_a_table_too_wide_is_not_cut(terminal: io.StringIO, capsys: pytest.CaptureFixture) -> None:
    """``ps`` in 80 columns showed ``SERVI… | gatew… | runn…``: now every cell whole, one line a row."""
    headers = ("SERVICE", "ROLE", "MODEL", "VERSION", "IMAGE", "STATUS", "HEALTH", "PORTS", "UP SINCE")
    row = (LONG, "gateway", LONG, "12", f"modelport/{LONG}:12", "running", "healthy", "127.0.0.1:8080->8080/tcp",
           "3m ago")
    output.table(headers, [row])
    printed = capsys.readouterr().out + terminal.getvalue()
    assert "…" not in printed
    assert _row(printed, LONG) == [*row[:-1], "3m", "ago"]
