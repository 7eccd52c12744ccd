"""``modelport predictions list | stats | export``: the prediction log, from its database (a stack's,
through its gateway, or the one ``modelport serve --log-db`` writes); ``receive``: the stack's
control service writing the proxy's own answers into it."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from modelport.cli.forward import run_in_control
from modelport.cli.output import console, print_json, table
from modelport.cli.stack import DB_URL, DB_URL_ENV, DIR, db_url_or_stack
from modelport.errors import ModelportError

app = typer.Typer(help="Query the prediction log (recent predictions, statistics, exports); receive a stack proxy's own answers into it.",
                  no_args_is_help=True)

MODEL = typer.Option(None, "--model", help="Only this model.")
SINCE = typer.Option(None, "--since", help="Only since then: 30m, 2h, 7d, or an ISO time (UTC).")


def _engine(url: str):
    from modelport.predlog.db import make_engine

    return make_engine(url)


def _since(since: str | None):
    from modelport.predlog.queries import parse_since

    return parse_since(since) if since else None


def _short(text: str | None, width: int = 48) -> str:
    text = text or ""
    return text if len(text) <= width else text[:width - 1] + "…"


@app.command("list")
def list_cmd(ctx: typer.Context, model: str = MODEL, since: str = SINCE, limit: int = typer.Option(20, "--limit"),
             as_json: bool = typer.Option(False, "--json", help="Print JSON."), directory: Path = DIR,
             db_url: str = DB_URL) -> None:
    """The most recent predictions, newest first."""
    url = db_url_or_stack(db_url, directory)
    if url is None:
        return run_in_control(ctx)
    from modelport.predlog.queries import list_predictions

    rows = list_predictions(_engine(url), model=model, since=_since(since), limit=limit)
    if as_json:
        return print_json(rows)
    table(("TIME", "REQUEST", "KEY", "MODEL", "STATUS", "MS", "INPUTS", "OUTPUTS"),
          ((r["time"].strftime("%Y-%m-%dT%H:%M:%S"), _short(r["request_id"], 12), r["key_id"] or "-",
            f"{r['model']}:{r['version'] or '?'}", r["status"], f"{r['latency_ms']:.1f}", _short(r["inputs"]),
            _short(r["outputs"])) for r in rows))


@app.command()
def stats(ctx: typer.Context, model: str = MODEL, since: str = SINCE,
          as_json: bool = typer.Option(False, "--json", help="Print JSON."), directory: Path = DIR,
          db_url: str = DB_URL) -> None:
    """Per model and version: requests, error rate (status ≥ 400), p50/p99 latency."""
    url = db_url_or_stack(db_url, directory)
    if url is None:
        return run_in_control(ctx)
    from modelport.predlog.queries import stats as query_stats

    rows = query_stats(_engine(url), model=model, since=_since(since))
    if as_json:
        return print_json(rows)
    table(("MODEL", "VERSION", "REQUESTS", "ERRORS", "ERROR RATE", "P50 MS", "P99 MS"),
          ((r["model"], r["version"] or "?", r["count"], r["errors"], f"{r['error_rate']:.2%}", f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}") for r in rows))


@app.command()
def export(ctx: typer.Context, model: str = MODEL, since: str = SINCE,
           fmt: str = typer.Option("csv", "--format", help="csv, json (one object a line) or parquet."),
           output: Path = typer.Option(..., "--output", "-o", help="The file to write ('-': standard output)."),
           directory: Path = DIR, db_url: str = DB_URL) -> None:
    """Write the predictions (oldest first) to a file."""
    url = db_url_or_stack(db_url, directory)
    if url is None:
        return run_in_control(ctx)
    from modelport.predlog.queries import check_format, check_log
    from modelport.predlog.queries import export as query_export

    check_format(fmt)
    check_log(engine := _engine(url))
    if str(output) == "-":
        query_export(engine, sys.stdout.buffer, fmt, model=model, since=_since(since))
        sys.stdout.buffer.flush()
        return
    with output.open("wb") as f:
        n = query_export(engine, f, fmt, model=model, since=_since(since))
    console.print(f"Wrote {n} predictions to {output}")


@app.command()
def receive(
    port: int = typer.Option(5140, "--port", help="The UDP port HAProxy sends its log to."),
    host: str = typer.Option("0.0.0.0", "--host"),
    db_url: str = typer.Option(None, "--db-url", envvar=DB_URL_ENV, show_envvar=False,
                               help=f"The predictions database (default: ${DB_URL_ENV}; without a password in it, "
                                    "PostgreSQL's is read from $MODELPORT_PREDICTIONS_DB_PASSWORD_FILE)."),
    spool_dir: Path = typer.Option(None, "--spool-dir", help="Where records wait while the database is unavailable."),
    log_format: str = typer.Option("text", "--log-format", help="text or json."),
) -> None:
    """Record the answers a stack's HAProxy gives itself (502/503/504: no model replica could take the
    request) in the prediction log, so stats count them and their request ids can be found. Receives
    HAProxy's JSON log lines over UDP syslog until SIGTERM or Ctrl-C; runs in the stack's control service."""
    import logging.config

    from modelport.predlog.proxylog import receive as run_receiver
    from modelport.serving.logs import log_config

    if not db_url:  # it writes, so no stack to forward to: it runs inside one
        raise ModelportError(f"No predictions database: pass --db-url or set {DB_URL_ENV}")
    logging.config.dictConfig(log_config(log_format, "info"))
    run_receiver(db_url, spool_dir, host=host, port=port)
