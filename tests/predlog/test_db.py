"""The predictions database's password from a file (a stack's Compose secret), against a real
PostgreSQL server that asks for it (SCRAM), never taken from an environment variable's value."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from modelport.errors import ModelportError
from modelport.predlog.db import PASSWORD_FILE_ENV, make_engine
from tests.helpers import run_in_process


@pytest.fixture
def password_role(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A role that must log in with its password over TCP (the test server trusts everyone else);
    → (its URL without the password, the password)."""
    role, password = f"mp_pw_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin = make_engine(postgres_url)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        conn.execute(text(f"GRANT ALL ON SCHEMA public TO {role}"))
        hba = Path(conn.execute(text("SHOW hba_file")).scalar())
        conn.commit()
    original = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + original)  # the first matching line wins
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_reload_conf()"))
        yield make_url(postgres_url).set(username=role).render_as_string(hide_password=False), password
    finally:
        hba.write_text(original)
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_reload_conf()"))
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
            conn.commit()
        admin.dispose()


def current_user(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT current_user")).scalar()
    finally:
        engine.dispose()


def test_the_password_is_read_from_the_file_the_environment_names(password_role, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url, password = password_role
    role = make_url(url).username
    monkeypatch.delenv(PASSWORD_FILE_ENV, raising=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(OperationalError, match="password"):
        current_user(url)  # the server does ask for it

    secret = tmp_path / "db-password"
    secret.write_text(password + "\n")  # as `echo` would write it: the newline is not part of it
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(secret))
    assert current_user(url) == role
    # A password written in the URL wins over the file.
    secret.write_text("not-the-password")
    assert current_user(make_url(url).set(password=password).render_as_string(hide_password=False)) == role


def test_an_unreadable_or_empty_password_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://modelport@127.0.0.1:1/predictions"
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(ModelportError, match=f"Cannot read the database password from {tmp_path / 'missing'}"):
        make_engine(url)
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(tmp_path / "empty"))
    with pytest.raises(ModelportError, match="is empty"):
        make_engine(url)
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(tmp_path / "missing"))
    make_engine(f"sqlite:///{tmp_path / 'log.db'}").dispose()  # only PostgreSQL URLs take it


def test_the_cli_reads_it_too_and_says_what_is_wrong(password_role, tmp_path: Path) -> None:
    """What `modelport stack keys ...` runs in the gateway's container (its environment names the file)."""
    url, password = password_role
    secret = tmp_path / "db-password"
    secret.write_text(password)
    env = {"MODELPORT_HOME": str(tmp_path / "home"), "MODELPORT_PREDICTIONS_DB_URL": url, PASSWORD_FILE_ENV: str(secret)}
    created = run_in_process("stack", "keys", "create", "from-file", env=env)
    assert "Created key_" in created.stderr and re.fullmatch(r"mpk_\S+\n", created.stdout)  # the key alone
    secret.unlink()
    proc = run_in_process("stack", "keys", "list", env=env, check=False)
    message = " ".join(proc.stderr.split())  # as the console wrapped it
    assert proc.returncode == 1 and f"Cannot read the database password from {secret} " in message, proc.stderr
    assert "Traceback" not in proc.stderr
