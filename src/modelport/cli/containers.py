"""``modelport build | run | scale | ps | logs | stop | start | restart | rm | exec | deploy | promote | rollback | doctor``."""

from __future__ import annotations

from pathlib import Path

import typer

from modelport import defaults
from modelport.cli.output import LoggedProgress, console, success

BASE_IMAGE_HELP = "Base image with Python 3.11 (the Dockerfile's FROM)."
PROXY_IMAGE_HELP = "HAProxy image the service's gateway is built on."
SIGN_KEY_HELP = "Sign the image and its SBOM with this Ed25519 private key (PEM; default: MODELPORT_SIGNING_KEY)."
VERIFY_KEY_HELP = ("Refuse the image unless it is the one signed with this public key (PEM), its SBOM unchanged "
                   "(default: MODELPORT_VERIFY_KEY).")


def build(
    ref: str = typer.Argument(..., help="Model to build: NAME, NAME:3 or NAME@alias."),
    tag: str = typer.Option(None, "--tag", "-t", help="Image tag (default modelport/NAME:VERSION)."),
    base_image: str = typer.Option(defaults.BASE_IMAGE, "--base-image", help=BASE_IMAGE_HELP),
    requirements: Path = typer.Option(None, "--requirements", help="Extra pip requirements for the image, one per line."),
    context_only: Path = typer.Option(None, "--context-only", help="Write the build context to this directory and stop."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build every layer again."),
    push: str = typer.Option(None, "--push", help="Then push it as REGISTRY/REPOSITORY or REGISTRY/REPOSITORY:TAG (default tag: the model version)."),
    runtime: str = typer.Option("native", "--runtime", help="native: the model's own framework; onnx: a scikit-learn, "
                                "XGBoost or LightGBM model converted to ONNX and checked against the native one "
                                "(tag modelport/NAME:VERSION-onnx; no scikit-learn or SciPy in the image)."),
    sign_key: Path = typer.Option(None, "--sign-key", help=SIGN_KEY_HELP),
    platform: str = typer.Option(None, "--platform", help="Build for linux/arm64 or linux/amd64: wheels for it, steps emulated on another host (default tag NAME:VERSION-arm64)."),
    warmup: Path = typer.Option(None, "--warmup", help="A v2 inference request (JSON) the image's server predicts before "
                                "it is ready, checked at build time (default: inputs generated from the model's signature)."),
    build_base_image: str = typer.Option(None, "--build-base-image", help="With --platform: cross-build, the build "
                                         "stage natively on this image of the host's platform (the same Python 3.11 as "
                                         "--base-image, which must be a local image of --platform); only the last "
                                         "steps and the model's load check run emulated."),
    prediction_log: bool = typer.Option(False, "--prediction-log", help="Also install SQLAlchemy and the PostgreSQL "
                                        "driver, so the image's server can write the prediction log (serve --log-db; "
                                        "the Helm chart's model behind its gateway)."),
) -> None:
    """Build a lean, offline-reproducible image serving a model (and push it to a registry)."""
    from modelport.container import engine
    from modelport.container.build import build_image, push_reference, write_build_context

    with LoggedProgress("build") as log:
        if context_only:
            write_build_context(ref, context_only, base_image=base_image, requirements=requirements, runtime=runtime,
                                platform=platform, build_base_image=build_base_image, warmup=warmup,
                                prediction_log=prediction_log, progress=log)
            success(f"Build context written to {context_only}",
                    f"  (docker build{f' --platform {platform}' if platform and not build_base_image else ''} -t IMAGE "
                    f"{context_only})")
            return
        image = build_image(ref, tag=tag, base_image=base_image, requirements=requirements, nocache=no_cache,
                            runtime=runtime, platform=platform, build_base_image=build_base_image,
                            sign_key=sign_key, warmup=warmup, prediction_log=prediction_log, progress=log)
        if push:
            engine.push(image.tag, pushed := push_reference(push, image.tag), progress=log)
    success(f"Built {image.tag}", f" ({image.size / 1e6:.0f} MB, {image.seconds:.1f}s) serving {image.model.ref}"
            + (" with onnxruntime" if runtime == "onnx" else "")
            + (f", pushed as {pushed}" if push else ""))
    console.print(f"  SBOM: {image.sbom}" + (f" (signed with key {image.signed_by})" if image.signed_by else ""))


def run(
    target: str = typer.Argument(..., help="A model (NAME, NAME:3, NAME@alias; built if needed) or a modelport image."),
    port: int = typer.Option(defaults.PORT, "--port", "-p", help="Host port to publish."),
    name: str = typer.Option(None, "--name", help="Service name (default: the model name)."),
    host_ip: str = typer.Option("127.0.0.1", "--host-ip", help="Host address to publish on (0.0.0.0: every interface)."),
    cpus: float = typer.Option(None, "--cpus", help="CPU limit, e.g. 1.5."),
    memory: str = typer.Option(None, "--memory", help="Memory limit, e.g. 512m."),
    restart: str = typer.Option("unless-stopped", "--restart", help="Restart policy."),
    env: list[str] = typer.Option(None, "--env", "-e", help="KEY=VALUE for the model container; repeatable."),
    replicas: int = typer.Option(1, "--replicas", help="Model containers to balance over."),
    base_image: str = typer.Option(defaults.BASE_IMAGE, "--base-image", help=BASE_IMAGE_HELP),
    proxy_image: str = typer.Option(defaults.PROXY_IMAGE, "--proxy-image", envvar="MODELPORT_PROXY_IMAGE", help=PROXY_IMAGE_HELP),
    wait: float = typer.Option(defaults.HEALTHY_WAIT, "--wait", help="Seconds to wait for the service to be healthy."),
    verify_key: Path = typer.Option(None, "--verify-key", help=VERIFY_KEY_HELP),
) -> None:
    """Run a model as a service: builds the image if missing, starts its replicas with limits behind a
    proxy, waits until healthy."""
    from modelport.deploy import containers as svc
    from modelport.serving.timings import process_start

    settings = svc.RunSettings.parse(cpus=cpus, memory=memory, restart=restart, env=env or ())
    with LoggedProgress("run") as log:
        info = svc.run(target, port=port, name=name, host_ip=host_ip, replicas=replicas, settings=settings,
                       base_image=base_image, proxy_image=proxy_image, wait=wait, verify_key=verify_key, progress=log,
                       origin=process_start())  # from the command itself: its imports count too
    success(info.service, f" serves {info.model}:{info.version} at {info.url} ({len(info.replicas)} replica(s))")
    if info.coldstart is not None:
        console.print(f"  {info.coldstart.line()}")
    console.print(f"  curl -X POST {info.url}/predict -H 'Content-Type: application/json' -d '{{\"features\": [...]}}'")


def deploy(
    target: str = typer.Argument(..., help="The model version to deploy (NAME:3, NAME@alias)."),
    replace: str = typer.Option(..., "--replace", help="The service whose model to replace."),
    canary: int = typer.Option(None, "--canary", help="Send only this percent of requests to the new version, "
                               "until `modelport promote` (or `rollback`)."),
    base_image: str = typer.Option(defaults.BASE_IMAGE, "--base-image", help=BASE_IMAGE_HELP),
    wait: float = typer.Option(defaults.HEALTHY_WAIT, "--wait"),
    verify_key: Path = typer.Option(None, "--verify-key", help=VERIFY_KEY_HELP),
) -> None:
    """Replace a running service's model with no downtime (the old one serves until the new one is healthy)."""
    from modelport.deploy import containers as svc

    with LoggedProgress("deploy") as log:
        info = svc.deploy(target, replace=replace, canary=canary, base_image=base_image, wait=wait, verify_key=verify_key,
                          progress=log)
    if canary is not None:
        success(info.service, f" sends {canary}% of requests to {info.model}:{info.version}: "
                f"`modelport promote {info.service}` or `modelport rollback {info.service}`")
    else:
        success(info.service, f" now serves {info.model}:{info.version} at {info.url}")


def promote(service: str) -> None:
    """Send all traffic to a service's canary and retire the version it replaces."""
    from modelport.deploy import containers as svc

    with LoggedProgress("promote") as log:
        info = svc.promote(service, progress=log)
    success(info.service, f" now serves {info.model}:{info.version} at {info.url}")


def scale(service: str, replicas: int = typer.Argument(..., help="How many replicas to run."),
          wait: float = typer.Option(defaults.HEALTHY_WAIT, "--wait")) -> None:
    """Run N replicas of a service's model (new ones get traffic once healthy, removed ones drain first)."""
    from modelport.deploy import containers as svc

    with LoggedProgress("scale") as log:
        info = svc.scale(service, replicas, wait=wait, progress=log)
    success(info.service, f" runs {len(info.replicas)} replica(s) of {info.model}:{info.version}")


def rollback(
    service: str,
    to: int = typer.Option(None, "--to", help="Version to go back to (default: the one deployed before)."),
    base_image: str = typer.Option(defaults.BASE_IMAGE, "--base-image", help=BASE_IMAGE_HELP),
    wait: float = typer.Option(defaults.HEALTHY_WAIT, "--wait"),
) -> None:
    """Go back to an earlier version with no downtime; during a canary, all traffic back to the serving version."""
    from modelport.deploy import containers as svc

    with LoggedProgress("rollback") as log:
        info = svc.rollback(service, to=to, base_image=base_image, wait=wait, progress=log)
    success(info.service, f" rolled back to {info.model}:{info.version}")


def ps(all: bool = typer.Option(False, "--all", "-a", help="Include stopped containers."),
       as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List modelport's containers: each service's gateway and every replica, with the proxy's check of
    it (UP, DOWN, DRAIN...) and the percent of the service's requests it gets."""
    from modelport.cli.output import ago, print_json, table
    from modelport.deploy import containers as svc

    rows = svc.status(all=all)
    if as_json:
        return print_json(rows)
    table(("SERVICE", "ROLE", "NAME", "VERSION", "STATUS", "HEALTH", "PROXY", "WEIGHT", "PORTS", "UP SINCE"),
          ((r["service"], r["role"], r["name"], r["version"], r["status"], r["health"], r["proxy"] or "-",
            "-" if r["weight"] is None else f"{r['weight']}%", ",".join(r["ports"]) or "-",
            ago(r["started_at"]) if r["started_at"] else "-") for r in rows))


def logs(service: str, follow: bool = typer.Option(False, "--follow", "-f"),
         tail: int = typer.Option(None, "--tail", help="Only the last N lines.")) -> None:
    """Show a service's model container logs (every replica's, each line prefixed by its name when there are several)."""
    import sys

    from modelport.deploy import containers as svc

    for chunk in svc.logs(service, tail=tail, follow=follow):
        sys.stdout.write(chunk.decode(errors="replace"))
        sys.stdout.flush()


def stop(service: str) -> None:
    """Stop a service (gateway first, so no request reaches a stopping model)."""
    from modelport.deploy import containers as svc

    console.print(f"Stopped {', '.join(svc.stop(service))}")


def start(service: str, wait: float = typer.Option(defaults.HEALTHY_WAIT, "--wait")) -> None:
    """Start a stopped service and wait until it is healthy."""
    from modelport.deploy import containers as svc

    console.print(f"Started {', '.join(svc.start(service, wait))}")


def restart(service: str, wait: float = typer.Option(defaults.HEALTHY_WAIT, "--wait")) -> None:
    """Restart a service and wait until it is healthy."""
    from modelport.deploy import containers as svc

    console.print(f"Restarted {', '.join(svc.restart(service, wait))}")


def rm(service: str, force: bool = typer.Option(False, "--force", "-f", help="Remove even if running.")) -> None:
    """Remove a service's containers and network."""
    from modelport.deploy import containers as svc

    console.print(f"Removed {', '.join(svc.remove(service, force=force))}")


def exec_cmd(service: str, command: list[str] = typer.Argument(..., help="The command, after --.")) -> None:
    """Run a command in a service's model container: modelport exec NAME -- CMD..."""
    import sys

    from modelport.deploy import containers as svc

    code, output = svc.exec_in(service, command)
    sys.stdout.write(output.decode(errors="replace"))
    raise typer.Exit(code)


def doctor(port: list[int] = typer.Option([defaults.PORT], "--port", help="Ports to check; repeatable.")) -> None:
    """Check the Docker Engine, ports, and explain every modelport container that is not serving."""
    from rich.text import Text

    from modelport.deploy.doctor import OK, PROBLEM, WARNING, diagnose

    marks = {OK: ("✔", "green"), WARNING: ("!", "yellow"), PROBLEM: ("✘", "red")}

    report = diagnose(port)
    for f in report.findings:
        console.print(Text.assemble(marks[f.status], " ", f.title))
        if f.detail:
            console.print("    " + f.detail.replace("\n", "\n    "))
    if not report.healthy:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(build)
    for command in (run, scale, deploy, promote, rollback, ps, logs, stop, start, restart, rm, doctor):
        app.command()(command)
    app.command("exec")(exec_cmd)
