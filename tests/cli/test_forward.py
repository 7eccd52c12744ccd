"""Commands run in a stack's control service get the argv rebuilt from Click's context (cli/forward.py):
what the user gave, without the host-only --dir, --db-url and --output. In-process, no Docker:
the control service is a stand-in that records the argv and answers with canned output."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import pytest
import typer
from typer.testing import CliRunner

from modelport.cli.forward import forwarded_argv
from modelport.cli.main import app


class FakeGateway:
    def __init__(self, output: bytes = b"", status: int = 0) -> None:
        self.output, self.status = output, status
        self.calls: list[list[str]] = []

    def __call__(self, stack: object, argv: list[str], stdout: IO[bytes] | None = None) -> int:
        self.calls.append(argv)
        if stdout is not None:
            stdout.write(self.output)
        return self.status


SYNCED: list[object] = []


@pytest.fixture
def stack_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding a stack.json, so the commands go to the control service (no --db-url here)."""
    import modelport.deploy.stack as stack

    monkeypatch.delenv("MODELPORT_PREDICTIONS_DB_URL", raising=False)
    monkeypatch.setattr(stack.Stack, "load", classmethod(lambda cls, directory=".": ("stack", Path(directory))))
    # After a keys change the proxy gets the keys' hashes; here, the stand-in stack records that it was asked.
    monkeypatch.setattr(stack, "sync_keys", lambda s: SYNCED.append(s))
    d = tmp_path / "shop"
    d.mkdir()
    (d / "stack.json").write_text("{}")
    return d


def forward(monkeypatch: pytest.MonkeyPatch, *args: str, gateway: FakeGateway | None = None) -> tuple[list[str], int]:
    """Run ``modelport ARGS`` against the stand-in control service → the argv it got and the exit code."""
    import modelport.deploy.stack as stack

    gateway = gateway or FakeGateway()
    monkeypatch.setattr(stack, "exec_in_control", gateway)
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert len(gateway.calls) == 1, result.output
    return gateway.calls[0], result.exit_code


@pytest.mark.parametrize(("args", "expected"), [
    (["stack", "keys", "create", "ci"], ["stack", "keys", "create", "ci"]),
    (["stack", "keys", "create", "--", "-odd"], ["stack", "keys", "create", "--", "-odd"]),
    (["stack", "keys", "list"], ["stack", "keys", "list"]),
    (["stack", "keys", "list", "--json"], ["stack", "keys", "list", "--json"]),
    (["stack", "keys", "revoke", "key_0123"], ["stack", "keys", "revoke", "key_0123"]),
    (["predictions", "list"], ["predictions", "list"]),
    (["predictions", "list", "--limit", "5", "--since", "2h", "--model", "iris", "--json"],
     ["predictions", "list", "--model", "iris", "--since", "2h", "--limit", "5", "--json"]),
    (["predictions", "stats", "--model", "iris"], ["predictions", "stats", "--model", "iris"]),
    (["predictions", "stats", "--json", "--since", "1h"], ["predictions", "stats", "--since", "1h", "--json"]),
    (["predictions", "export", "-o", "-"], ["predictions", "export", "--output", "-"]),
    (["predictions", "export", "--format", "json", "--model", "iris", "-o", "-"],
     ["predictions", "export", "--model", "iris", "--format", "json", "--output", "-"]),
])
def test_the_control_service_gets_the_command_as_given_without_host_options(
        stack_dir: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], expected: list[str]) -> None:
    end = args.index("--") if "--" in args else len(args)  # options before the arguments' "--"
    SYNCED.clear()
    argv, code = forward(monkeypatch, *args[:end], "--dir", str(stack_dir), *args[end:])
    assert (argv, code) == (expected, 0)
    # Only a change of keys hands the proxy the keys anew, once.
    assert len(SYNCED) == (1 if args[:3] in (["stack", "keys", "create"], ["stack", "keys", "revoke"]) else 0)


def test_the_stack_directory_is_found_from_the_working_directory(stack_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(stack_dir)
    argv, _ = forward(monkeypatch, "stack", "keys", "list")
    assert argv == ["stack", "keys", "list"]


def test_an_export_to_a_file_gets_the_control_services_output(stack_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    argv, code = forward(monkeypatch, "predictions", "export", "--output", str(out), "-C", str(stack_dir),
                         gateway=FakeGateway(b"time,model\n"))
    assert (argv, code) == (["predictions", "export", "--output", "-"], 0)
    assert out.read_bytes() == b"time,model\n"


def test_a_failed_export_leaves_no_file_and_exits_with_the_control_services_status(
        stack_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    _, code = forward(monkeypatch, "predictions", "export", "--format", "xml", "-o", str(out), "-C", str(stack_dir),
                      gateway=FakeGateway(b"half", status=1))
    assert code == 1
    assert list(tmp_path.glob("*predictions.csv*")) == []


def test_a_db_url_runs_the_command_here(stack_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import modelport.deploy.stack as stack

    gateway = FakeGateway()
    monkeypatch.setattr(stack, "exec_in_control", gateway)
    result = CliRunner().invoke(app, ["stack", "keys", "list", "--json", "-C", str(stack_dir),
                                      "--db-url", f"sqlite:///{tmp_path / 'p.db'}"])
    assert result.exit_code == 0, result.output
    assert gateway.calls == [] and result.stdout.strip() == "[]"


# -- the argv builder on its own: every kind of parameter the CLI declares

root = typer.Typer()


@root.callback()
def _root() -> None:
    pass


@root.command("cmd")
def cmd(ctx: typer.Context, refs: list[str] = typer.Argument(None), serve: bool = typer.Option(True, "--serve/--no-serve"),
        as_json: bool = typer.Option(False, "--json"), port: int = typer.Option(8080, "--port", "-p"),
        route: list[str] = typer.Option(None, "--route"), directory: Path = typer.Option(Path("."), "--dir", "-C"),
        db_url: str = typer.Option(None, "--db-url")) -> None:
    print(" ".join(forwarded_argv(ctx)))


@pytest.mark.parametrize(("args", "expected"), [
    ([], ""),
    (["a", "b"], "a b"),
    (["--no-serve", "-p", "9000", "a"], "--no-serve --port 9000 a"),
    (["--serve", "--json"], "--serve --json"),
    (["--route", "x=http://x:1", "--route", "y=http://y:1"], "--route x=http://x:1 --route y=http://y:1"),
    (["--port", "8080"], "--port 8080"),  # given, though equal to the default: passed on as given
    (["-C", "/srv/stack", "--db-url", "sqlite://", "a"], "a"),
    (["--", "-a", "b"], "-- -a b"),
])
def test_forwarded_argv_parses_back_to_the_same_parameters(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(root, ["cmd", *args])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == ("cmd " + expected).strip()
