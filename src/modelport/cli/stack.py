"""``modelport stack ...``: models, a gateway and PostgreSQL as one Compose stack."""

from __future__ import annotations

from pathlib import Path

import typer

from modelport import defaults
from modelport.cli.forward import run_in_gateway
from modelport.cli.output import LoggedProgress, console, err, print_json, success, table
from modelport.errors import ModelportError

app = typer.Typer(help="Run models behind a gateway with API keys and a prediction log (Docker Compose).",
                  no_args_is_help=True)
keys_app = typer.Typer(help="API keys for the gateway: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

DB_URL_ENV = "MODELPORT_PREDICTIONS_DB_URL"
DIR = typer.Option(Path("."), "--dir", "-C", help="The stack's directory.")
WAIT = typer.Option(defaults.HEALTHY_WAIT, "--wait", help="Seconds to wait for the services to be healthy.")
UP_WAIT = typer.Option(defaults.STACK_WAIT, "--wait", help="Seconds to wait for the services to be healthy.")


def _stack(directory: Path):
    from modelport.deploy.stack import Stack

    return Stack.load(directory)


@app.command()
def init(
    directory: Path = typer.Argument(..., help="A new (or empty) directory for the stack."),
    model: list[str] = typer.Option(..., "--model", help="A model to serve: NAME, NAME:3 or NAME@alias; repeat for each."),
    db: str = typer.Option("postgres", "--db", help="The prediction log's database: postgres."),
    db_image: str = typer.Option(defaults.DB_IMAGE, "--db-image", help="PostgreSQL image."),
    gateway_port: int = typer.Option(defaults.PORT, "--gateway-port", help="The one published port."),
    gateway_host: str = typer.Option("127.0.0.1", "--gateway-host", help="Address to publish it on (0.0.0.0: every interface)."),
    base_image: str = typer.Option(defaults.BASE_IMAGE, "--base-image", help="Base image with Python 3.11 for the images built."),
    name: str = typer.Option(None, "--name", help="Stack (Compose project) name; default: the directory's name."),
    cpus: float = typer.Option(1.0, "--cpus", help="CPU limit of each model service."),
    memory: str = typer.Option("1g", "--memory", help="Memory limit of each model service."),
) -> None:
    """Write a stack: compose.yaml, a generated database password (secrets/), and the build contexts."""
    from modelport.deploy.stack import init as init_stack

    with LoggedProgress("stack-init") as log:
        stack = init_stack(directory, model, name=name, db=db, db_image=db_image, gateway_host=gateway_host,
                           gateway_port=gateway_port, base_image=base_image, cpus=cpus, memory=memory, progress=log)
    success(f"Stack {stack.state.name} written to {stack.directory}", ". Next:\n"
            f"  cd {directory} && modelport stack up\n  modelport stack keys create my-client")


@app.command()
def up(directory: Path = DIR, wait: float = UP_WAIT,
       gateway_port: int = typer.Option(None, "--gateway-port", help="Publish the gateway on this port from now on.")) -> None:
    """Build missing images, start every service, wait until all are healthy."""
    from modelport.deploy.stack import up as stack_up

    stack = _stack(directory)
    with LoggedProgress("stack-up") as log:
        stack_up(stack, wait=wait, gateway_port=gateway_port, progress=log)
    s = stack.state
    success(f"Stack {s.name} is up", f": http://{s.gateway_host}:{s.gateway_port} "
            f"(models: {', '.join(m.name + ':' + str(m.version) for m in s.models)})")


@app.command()
def down(directory: Path = DIR,
         volumes: bool = typer.Option(False, "--volumes", help="Also delete the database and spool volumes.")) -> None:
    """Stop and remove the stack's containers and networks (the data stays unless --volumes)."""
    from modelport.deploy.stack import down as stack_down

    stack = _stack(directory)
    stack_down(stack, volumes=volumes)
    console.print(f"Stack {stack.state.name} is down" + (" and its volumes deleted" if volumes else ""))


@app.command()
def ps(directory: Path = DIR, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The stack's containers, their health and published ports."""
    from modelport.deploy.stack import ps as stack_ps

    rows = stack_ps(_stack(directory))
    if as_json:
        return print_json(rows)
    table(("SERVICE", "CONTAINER", "IMAGE", "STATE", "PORTS"),
          ((r["service"], r["container"], r["image"], r["state"], r["ports"] or "-") for r in rows))


@app.command()
def logs(service: str = typer.Argument(None, help="One service (default: all)."), directory: Path = DIR,
         follow: bool = typer.Option(False, "--follow", "-f"), tail: int = typer.Option(None, "--tail")) -> None:
    """Show the services' logs."""
    from modelport.deploy.stack import logs as stack_logs

    stack_logs(_stack(directory), service, follow=follow, tail=tail)


@app.command()
def restart(service: str, directory: Path = DIR, wait: float = WAIT) -> None:
    """Restart one service and wait until it is healthy again."""
    from modelport.deploy.stack import restart as stack_restart

    stack_restart(_stack(directory), service, wait=wait)
    console.print(f"{service} restarted and healthy")


@app.command()
def deploy(target: str = typer.Argument(..., help="MODEL=REF (e.g. iris=iris:2, iris=2) or REF."),
           directory: Path = DIR, wait: float = WAIT) -> None:
    """Serve another version of a model with no downtime: start it, wait healthy, switch, stop the old."""
    from modelport.deploy.stack import deploy as stack_deploy

    with LoggedProgress("stack-deploy") as log:
        new = stack_deploy(_stack(directory), target, wait=wait, progress=log)
    success(f"Now serving {new.name}:{new.version}", f" (rollback: modelport stack rollback {new.name})")


@app.command()
def rollback(model: str, directory: Path = DIR, wait: float = WAIT) -> None:
    """Serve the version a model had before its last deploy, with no downtime."""
    from modelport.deploy.stack import rollback as stack_rollback

    with LoggedProgress("stack-rollback") as log:
        new = stack_rollback(_stack(directory), model, wait=wait, progress=log)
    success(f"Rolled back: now serving {new.name}:{new.version}")


# -- keys: straight to the database when its URL is known (inside the gateway), else through the gateway

DB_URL = typer.Option(None, "--db-url", envvar=DB_URL_ENV, show_envvar=False,
                      help=f"The predictions database (default: ${DB_URL_ENV}, else the stack's, through its gateway).")


def db_url_or_stack(db_url: str | None, directory: Path) -> str | None:
    """The database URL to use here, or None when the stack's gateway must run the command."""
    if db_url:
        return db_url
    if (directory / "stack.json").is_file():
        return None
    raise ModelportError(f"No predictions database: pass --db-url, set {DB_URL_ENV}, or run this in a stack's "
                         "directory (or with --dir DIR)")


def _key_store(url: str):
    from modelport.gateway.keys import KeyStore
    from modelport.predlog.db import make_engine

    return KeyStore(make_engine(url))


@keys_app.command("create")
def keys_create(ctx: typer.Context, name: str = typer.Argument(..., help="Who or what will use the key."),
                directory: Path = DIR, db_url: str = DB_URL) -> None:
    """Create a key. It is shown once, alone on standard output (`KEY=$(modelport stack keys create ci)`):
    only its hash is stored."""
    url = db_url_or_stack(db_url, directory)
    if url is None:
        return run_in_gateway(ctx)
    key, token = _key_store(url).create(name)
    err.print(f"Created {key.id} ({name}). The key, shown only now:")
    print(token, flush=True)
    err.print("Send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.")


@keys_app.command("list")
def keys_list(ctx: typer.Context, directory: Path = DIR, db_url: str = DB_URL,
              as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List keys (their ids and first characters; never the keys)."""
    url = db_url_or_stack(db_url, directory)
    if url is None:
        return run_in_gateway(ctx)
    keys = _key_store(url).list()
    if as_json:
        return print_json([k.__dict__ for k in keys])
    table(("ID", "NAME", "PREFIX", "CREATED", "REVOKED"),
          ((k.id, k.name, k.prefix + "…", k.created_at.strftime("%Y-%m-%dT%H:%M"),
            k.revoked_at.strftime("%Y-%m-%dT%H:%M") if k.revoked_at else "-") for k in keys))


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key: str = typer.Argument(..., help="Key id (key_…) or the prefix `keys list` shows."),
                directory: Path = DIR, db_url: str = DB_URL) -> None:
    """Revoke a key (the gateway refuses it within seconds)."""
    url = db_url_or_stack(db_url, directory)
    if url is None:
        return run_in_gateway(ctx)
    revoked = _key_store(url).revoke(key)
    console.print(f"Revoked {revoked.id} ({revoked.name})")
