"""``modelport stack ...``: models behind HAProxy, with API keys and a PostgreSQL prediction log, as one Compose stack."""

from __future__ import annotations

from pathlib import Path

import typer

from modelport import defaults
from modelport.cli.forward import run_in_control
from modelport.cli.output import LoggedProgress, console, err, print_json, success, table
from modelport.errors import ModelportError

app = typer.Typer(help="Run models behind a gateway (HAProxy) with replicas, API keys and a prediction log (Docker Compose).",
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
    cpus: float = typer.Option(1.0, "--cpus", help="CPU limit of each model replica."),
    memory: str = typer.Option("1g", "--memory", help="Memory limit of each model replica."),
    replicas: int = typer.Option(1, "--replicas", help="Replicas of each model (change later with `stack scale`)."),
    proxy_image: str = typer.Option(defaults.PROXY_IMAGE, "--proxy-image", envvar="MODELPORT_PROXY_IMAGE",
                                    help="HAProxy image the stack's gateway is built on."),
) -> None:
    """Write a stack: compose.yaml, a generated database password (secrets/), and the build contexts."""
    from modelport.deploy.stack import init as init_stack

    with LoggedProgress("stack-init") as log:
        stack = init_stack(directory, model, name=name, db=db, db_image=db_image, gateway_host=gateway_host,
                           gateway_port=gateway_port, base_image=base_image, cpus=cpus, memory=memory,
                           replicas=replicas, proxy_image=proxy_image, progress=log)
    success(f"Stack {stack.state.name} written to {stack.directory}", ". Next:\n"
            f"  cd {directory} && modelport stack up\n  modelport stack keys create my-client")


@app.command()
def up(directory: Path = DIR, wait: float = UP_WAIT,
       gateway_port: int = typer.Option(None, "--gateway-port", help="Publish the gateway on this port from now on."),
       swarm: bool = typer.Option(False, "--swarm", help="Run the stack on Docker Swarm from now on (recorded in stack.json)."),
       registry: str = typer.Option(None, "--registry", help="With --swarm: the registry the images are pushed to and "
                                    "the nodes pull from: HOST:PORT, or HOST:PORT/PREFIX."),
       manager: str = typer.Option("", "--manager", help="With --swarm: a Swarm manager's engine (unix://, tcp://, ssh://); "
                                   "default: the engine modelport talks to (DOCKER_HOST), which also builds and pushes."),
       node: str = typer.Option("", "--node", help="With --swarm: the node (hostname) for the control service "
                                "and database, and the gateway unless --gateway-node; default: the manager's."),
       gateway_nodes: list[str] = typer.Option([], "--gateway-node", help="With --swarm: a node (hostname) that runs a "
                                               "gateway, publishing the port in host mode; repeatable (default: --node's)."),
       autoscale_every: float = typer.Option(None, "--autoscale-every", help="With --swarm: seconds between two decisions "
                                             "of the autoscaler (default: 2; in-flight is averaged over them)."),
       docker_socket: str = typer.Option(None, "--docker-socket", help="With --swarm: the path of the Docker socket on "
                                         "the managers' hosts, which the autoscaler mounts (default: /var/run/docker.sock)."),
) -> None:
    """Build missing images, start every service, wait until all are healthy (on a Swarm: push the
    images to its registry and `docker stack deploy` it)."""
    from modelport.deploy.stack import up as stack_up
    from modelport.deploy.swarm import DOCKER_SOCKET, SwarmSettings

    if (registry or manager or node or docker_socket or gateway_nodes or autoscale_every is not None) and not swarm:
        raise ModelportError("--registry, --manager, --node, --gateway-node, --autoscale-every and --docker-socket "
                             "go with --swarm")
    if swarm and not registry:
        raise ModelportError("--swarm needs --registry: the Swarm's nodes pull the stack's images from it")
    stack = _stack(directory)
    settings = SwarmSettings(registry, manager, node, docker_socket or DOCKER_SOCKET, gateway_nodes,
                             autoscale_every or 0.0) if swarm else None
    with LoggedProgress("stack-up") as log:
        stack_up(stack, wait=wait, gateway_port=gateway_port, swarm_settings=settings, progress=log)
    s = stack.state
    hosts = ([stack.swarm.node_address(n) or n for n in s.swarm.gateway_nodes or [s.swarm.node]]
             if stack.swarm and s.swarm else [s.gateway_host])
    success(f"Stack {s.name} is up" + (" on the Swarm" if s.swarm else ""),
            f": {', '.join(f'http://{h}:{s.gateway_port}' for h in hosts)} "
            f"(models: {', '.join(m.name + ':' + str(m.version) for m in s.models)})")


@app.command()
def down(directory: Path = DIR,
         volumes: bool = typer.Option(False, "--volumes", help="Also delete the database and spool volumes.")) -> None:
    """Stop and remove the stack's containers and networks (the data stays unless --volumes; on a Swarm,
    --volumes deletes those on the manager's node, the database's: each node keeps its own spool volume)."""
    from modelport.deploy.stack import down as stack_down

    stack = _stack(directory)
    stack_down(stack, volumes=volumes)
    console.print(f"Stack {stack.state.name} is down" + (" and its volumes deleted" if volumes else ""))


@app.command()
def ps(directory: Path = DIR, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The stack's containers: their health, and for each model replica what the proxy sees of it
    (its check and the percent of the model's requests it gets)."""
    from modelport.deploy.stack import autoscaling
    from modelport.deploy.stack import ps as stack_ps

    stack = _stack(directory)
    rows = stack_ps(stack)
    if as_json:
        return print_json(rows)
    nodes = bool(stack.state.swarm)  # a Swarm's tasks: on which node
    table(("SERVICE", "CONTAINER" if not nodes else "TASK", *(("NODE",) if nodes else ()), "VERSION", "STATE", "PROXY",
           "WEIGHT", "PORTS"),
          ((r["service"], r["container"], *((r["node"],) if nodes else ()), r["version"] or "-", r["state"],
            r["proxy"] or "-", "-" if r["weight"] is None else f"{r['weight']}%", r["ports"] or "-") for r in rows))
    if nodes and (scaled := autoscaling(stack, rows)):
        console.print()
        table(("MODEL", "AUTOSCALE", "REPLICAS", "LAST DECISION"),
              ((a["model"], a["policy"], f"{a['running']}/{a['tasks']} running", a["last"]) for a in scaled))


@app.command()
def logs(service: str = typer.Argument(None, help="One service or model (default: all)."), directory: Path = DIR,
         follow: bool = typer.Option(False, "--follow", "-f"), tail: int = typer.Option(None, "--tail")) -> None:
    """Show the services' logs."""
    from modelport.deploy.stack import logs as stack_logs

    stack_logs(_stack(directory), service, follow=follow, tail=tail)


@app.command()
def restart(service: str = typer.Argument(..., help="A service (db, control, gateway) or a model (all its replicas)."),
            directory: Path = DIR, wait: float = WAIT) -> None:
    """Restart a service or a model's replicas and wait until they are healthy again."""
    from modelport.deploy.stack import restart as stack_restart

    stack_restart(_stack(directory), service, wait=wait)
    console.print(f"{service} restarted and healthy")


@app.command()
def deploy(target: str = typer.Argument(..., help="MODEL=REF (e.g. iris=iris:2, iris=2) or REF."),
           directory: Path = DIR, wait: float = WAIT,
           canary: int = typer.Option(None, "--canary", help="Send only this percent of the model's requests to the new version (then `stack promote` or `stack rollback`).")) -> None:
    """Serve another version of a model with no downtime: start it beside the current one, wait until
    the proxy checks it healthy, move the traffic (or a canary's share), drain and retire the old."""
    from modelport.deploy.stack import deploy as stack_deploy

    with LoggedProgress("stack-deploy") as log:
        m = stack_deploy(_stack(directory), target, canary=canary, wait=wait, progress=log)
    if canary is not None:
        version = m.slots[m.candidate].version
        success(f"Canary: {canary}% of {m.name}'s requests go to version {version}",
                f" (then: modelport stack promote {m.name}, or modelport stack rollback {m.name})")
        return
    success(f"Now serving {m.name}:{m.version}", f" (rollback: modelport stack rollback {m.name})")


@app.command()
def promote(model: str, directory: Path = DIR) -> None:
    """Send all of a model's traffic to its canary and retire the version it replaces."""
    from modelport.deploy.stack import promote as stack_promote

    with LoggedProgress("stack-promote") as log:
        m = stack_promote(_stack(directory), model, progress=log)
    success(f"Promoted: now serving {m.name}:{m.version}")


@app.command()
def rollback(model: str, directory: Path = DIR, wait: float = WAIT) -> None:
    """Serve the version a model had before its last deploy, with no downtime; during a canary, send all
    traffic back to the serving version."""
    from modelport.deploy.stack import rollback as stack_rollback

    with LoggedProgress("stack-rollback") as log:
        m = stack_rollback(_stack(directory), model, wait=wait, progress=log)
    success(f"Rolled back: now serving {m.name}:{m.version}")


@app.command()
def scale(model: str,
          replicas: str = typer.Argument(..., help="How many replicas the model runs: N, or MIN:MAX to autoscale "
                                         "between (on a Swarm), with --in-flight or --rps."),
          directory: Path = DIR, wait: float = WAIT,
          in_flight: float = typer.Option(None, "--in-flight", help="Autoscale to this many requests in flight per "
                                          "replica (as the gateway counts them)."),
          rps: float = typer.Option(None, "--rps", help="Autoscale to this many requests per second per replica."),
          up_window: float = typer.Option(None, "--up-window", help="Autoscale: seconds; scale up only to the lowest "
                                          "count wanted over this window (default 0: at once)."),
          down_window: float = typer.Option(None, "--down-window", help="Autoscale: the cool-down, seconds; scale down "
                                            "only to the highest count wanted over this window (default 60)."),
          tolerance: float = typer.Option(None, "--tolerance", help="Autoscale: no change while the load per replica is "
                                          "within this fraction of the target (default 0.1)."),
) -> None:
    """Run this many replicas of a model; new ones get traffic once healthy, leaving ones are drained first.
    MIN:MAX: let the stack's autoscaler (on a Swarm) set the count on the gateway's metrics; a count ends that."""
    from modelport.deploy.autoscale import scale_target
    from modelport.deploy.stack import scale as stack_scale

    target = scale_target(replicas, in_flight=in_flight, rps=rps, up_window=up_window, down_window=down_window,
                          tolerance=tolerance)
    policy = target if isinstance(target, dict) else None
    with LoggedProgress("stack-scale") as log:
        m = stack_scale(_stack(directory), model, None if policy else target, autoscale=policy, wait=wait, progress=log)
    if policy:
        success(f"{m.name}:{m.version} autoscales between {policy['min']} and {policy['max']} replica(s)",
                f" (now {m.replicas}; its decisions: modelport stack logs autoscaler, modelport stack ps)")
        return
    success(f"{m.name}:{m.version} runs {m.replicas} replica(s)")


@app.command()
def autoscale(
    stack: str = typer.Option(..., "--stack", help="The Swarm stack's name: its model services are STACK_MODEL-SLOT."),
    gateway: list[str] = typer.Option(..., "--gateway", help="The gateway's URL in the stack network (http://gateway:8080); "
                                      "repeat for each gateway replica."),
    policy: str = typer.Option(..., "--policy", envvar="MODELPORT_AUTOSCALE_POLICY",
                               help='JSON {"MODEL": {"min": 1, "max": 8, "target": {"in_flight": 4}, "down_window": 60}} '
                               "or a file holding it (a stack.json: its models' autoscale)."),
    every: float = typer.Option(2.0, "--every", help="Seconds between two passes."),
    summary_every: float = typer.Option(60.0, "--summary-every", help="Seconds between two summary lines per model."),
    passes: int = typer.Option(None, "--passes", help="Stop after this many passes (default: until stopped)."),
) -> None:
    """Scale a Swarm stack's models on the gateway's metrics, one JSON line per decision (the stack's
    autoscaler service runs this on a manager node, the Docker socket mounted)."""
    import signal
    import threading

    from modelport.container import engine
    from modelport.deploy.autoscale import Autoscaler, GatewayMetrics, SwarmScaler, load_policies

    if every <= 0:
        raise ModelportError(f"--every {every}: seconds, above 0")
    policies = load_policies(policy)  # before the engine: a bad policy is the likelier mistake
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():  # PID 1 in a container ignores SIGTERM unhandled
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scaler = SwarmScaler(engine.client(), stack)
    scaler.check()
    metrics = GatewayMetrics(gateway)
    try:
        Autoscaler(policies, metrics, scaler, summary_every=summary_every).run(every, stop=stop, passes=passes)
    finally:
        metrics.close()


# -- keys: straight to the database when its URL is known (in the control service), else through it;
# the proxy gets the active keys' hashes after every change

DB_URL = typer.Option(None, "--db-url", envvar=DB_URL_ENV, show_envvar=False,
                      help=f"The predictions database (default: ${DB_URL_ENV}, else the stack's, through its control service).")


def db_url_or_stack(db_url: str | None, directory: Path) -> str | None:
    """The database URL to use here, or None when the stack's control service must run the command."""
    if db_url:
        return db_url
    if (directory / "stack.json").is_file():
        return None
    raise ModelportError(f"No predictions database: pass --db-url, set {DB_URL_ENV}, or run this in a stack's "
                         "directory (or with --dir DIR)")


def _key_store(url: str):
    from modelport.keys import KeyStore
    from modelport.predlog.db import make_engine

    return KeyStore(make_engine(url))


@keys_app.command("create")
def keys_create(ctx: typer.Context, name: str = typer.Argument(..., help="Who or what will use the key."),
                directory: Path = DIR, db_url: str = DB_URL) -> None:
    """Create a key. It is shown once, alone on standard output (`KEY=$(modelport stack keys create ci)`):
    only its hash is stored."""
    url = db_url_or_stack(db_url, directory)
    if url is None:
        return _changing_keys(ctx, directory)
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
        return run_in_control(ctx)
    keys = _key_store(url).list()
    if as_json:
        return print_json([k.__dict__ for k in keys])
    table(("ID", "NAME", "PREFIX", "CREATED", "REVOKED"),
          ((k.id, k.name, k.prefix + "…", k.created_at.strftime("%Y-%m-%dT%H:%M"),
            k.revoked_at.strftime("%Y-%m-%dT%H:%M") if k.revoked_at else "-") for k in keys))


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key: str = typer.Argument(..., help="Key id (key_…) or the prefix `keys list` shows."),
                directory: Path = DIR, db_url: str = DB_URL) -> None:
    """Revoke a key (the gateway refuses it from the moment this returns; on a Swarm, the other gateway nodes within a second)."""
    url = db_url_or_stack(db_url, directory)
    if url is None:
        return _changing_keys(ctx, directory)
    revoked = _key_store(url).revoke(key)
    console.print(f"Revoked {revoked.id} ({revoked.name})")


@keys_app.command("digests", hidden=True)
def keys_digests(db_url: str = DB_URL) -> None:
    """The active keys' sha256 → key id as JSON (what the stack gives its proxy; run in the control service)."""
    if not db_url:
        raise ModelportError(f"keys digests needs the database: --db-url or {DB_URL_ENV}")
    print_json(_key_store(db_url).digests())


@keys_app.command("sync")
def keys_sync(db_url: str = DB_URL,
              admin: str = typer.Option("127.0.0.1:9999", "--admin", help="The proxy's Runtime API: HOST:PORT, or unix:PATH."),
              every: float = typer.Option(1.0, "--every", help="Seconds between two checks of the database."),
              entries: list[str] = typer.Option([], "--map", help="MAP:KEY=VALUE, one entry of a map the proxy must hold "
                                                "whole (a Swarm stack's traffic.map, versions.map); repeatable."),
              ready: Path = typer.Option(None, "--ready-file", help="A file made once a pass succeeded (a healthcheck).")) -> None:
    """Keep a proxy's keys map equal to the database's active keys, and its other --map maps to those given
    (a Kubernetes gateway pod's sidecar, a Swarm gateway node's keysync task run this)."""
    import logging

    from modelport.deploy.keysync import sync_forever
    from modelport.deploy.proxy import Runtime, Transport

    if not db_url:
        raise ModelportError(f"keys sync needs the database: --db-url or {DB_URL_ENV}")
    maps: dict[str, dict[str, str]] = {}
    for entry in entries:
        name, colon, rest = entry.partition(":")
        key, equals, value = rest.partition("=")
        if not (colon and equals and name and key and value):
            raise ModelportError(f"--map {entry!r}: expected MAP:KEY=VALUE, e.g. traffic.map:lin-green=10")
        maps.setdefault(name, {})[key] = value
    transport = Transport.of_address(admin)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sync_forever(_key_store(db_url), Runtime(transport), every, maps=maps, ready=ready)


def _changing_keys(ctx: typer.Context, directory: Path) -> None:
    """Run a keys command in the stack's control service, then hand the proxy the keys as they are now."""
    from modelport.deploy.stack import sync_keys

    run_in_control(ctx)
    sync_keys(_stack(directory))
