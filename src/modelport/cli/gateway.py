"""``modelport gateway`` (the proxy in front of model services) and ``gateway-admin``.

The gateway's modules (aiohttp, the prediction log) are imported inside its commands: every other command
starts without them."""

from __future__ import annotations

from pathlib import Path

import typer

from modelport import defaults
from modelport.cli.limits import BODY_TIMEOUT, HEADER_TIMEOUT, KEEP_ALIVE, MAX_BUFFERED_BYTES
from modelport.cli.output import print_json
from modelport.errors import ModelportError


def gateway(
    route: list[str] = typer.Option(..., "--route", help="NAME=http://host:port, or NAME=http://host:port@VERSION; repeat for each model."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8080, "--port"),
    default: str = typer.Option(None, "--default", help="Model for /predict (default: the first route)."),
    admin_port: int = typer.Option(defaults.GATEWAY_ADMIN_PORT, "--admin-port", help="Loopback port of the admin API."),
    log_format: str = typer.Option("text", "--log-format", help="text or json."),
    db_url: str = typer.Option(None, "--db-url", envvar="MODELPORT_PREDICTIONS_DB_URL", show_envvar=False,
                               help="Log every prediction to this database (PostgreSQL or SQLite URL)."),
    require_keys: bool = typer.Option(False, "--require-keys", help="Refuse predictions without a valid API key (keys live in --db-url)."),
    spool_dir: Path = typer.Option(None, "--spool-dir", help="Where prediction records wait while the database is unavailable."),
    header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT, keep_alive: float = KEEP_ALIVE,
    max_buffered_bytes: int = MAX_BUFFERED_BYTES,
) -> None:
    """Serve one published port in front of model services, with switchable routes."""
    from modelport.gateway.hooks import hooks_from_options
    from modelport.gateway.proxy import Upstream
    from modelport.gateway.server import run_gateway
    from modelport.serving.http import DEFAULT_MAX_BODY
    from modelport.serving.limits import ReadLimits

    upstreams = [Upstream.parse(r) for r in route]
    limits = ReadLimits(header_timeout, body_timeout, keep_alive, max_buffered_bytes).check(DEFAULT_MAX_BODY)
    hooks = hooks_from_options(db_url, require_keys, spool_dir)
    run_gateway(upstreams, host=host, port=port, default=default, admin_port=admin_port, log_format=log_format, hooks=hooks,
                limits=limits)


admin_app = typer.Typer(help="Change a running gateway's routes (run inside its container).", no_args_is_help=True)


@admin_app.command("set-route")
def set_route(name: str, url: str, version: str = typer.Option(None, "--version"),
              drain_timeout: float = typer.Option(30, "--drain-timeout"),
              admin_port: int = typer.Option(defaults.GATEWAY_ADMIN_PORT, "--admin-port")) -> None:
    """Point NAME at URL; returns once requests on the old upstream have finished."""
    from modelport.gateway.admin import set_route as call

    print_json(call(name, url, version, port=admin_port, drain_timeout=drain_timeout))


@admin_app.command("routes")
def routes(admin_port: int = typer.Option(defaults.GATEWAY_ADMIN_PORT, "--admin-port")) -> None:
    """Show the routes and the requests in flight on each."""
    import httpx

    try:
        print_json(httpx.get(f"http://127.0.0.1:{admin_port}/routes", timeout=5).json())
    except httpx.HTTPError as e:
        raise ModelportError(f"Cannot reach the gateway's admin API on port {admin_port}: {e}") from None


def register(app: typer.Typer) -> None:
    app.command()(gateway)
    app.add_typer(admin_app, name="gateway-admin")
