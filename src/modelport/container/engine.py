"""The Docker Engine, through the docker SDK: one client, errors that say how to fix things."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.errors import ModelportError
from modelport.extras import require
from modelport.progress import ToolOutput


class EngineUnavailable(ModelportError):
    pass


class BuildError(ModelportError):
    pass


# One client per engine address and process, created (and pinged) on first use: polling loops ask for
# it many times a second. Keyed on the variables docker.from_env reads, so pointing DOCKER_HOST at
# another engine (a Swarm node, a test engine) gets that engine's client.
_ENV = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
_clients: dict[tuple[str | None, ...], Any] = {}
_clients_lock = threading.Lock()


def client(host: str | None = None) -> Any:
    """The process's client for the engine the environment names (or the one at ``host``: a Swarm
    manager's ``unix://``, ``tcp://`` or ``ssh://`` address), or an error explaining how to get one."""
    key = (host,) if host else tuple(os.environ.get(name) for name in _ENV)
    with _clients_lock:
        if (found := _clients.get(key)) is not None:
            return found
        require("docker", "Talking to the Docker Engine")
        import docker

        where = key[0] or "unix:///var/run/docker.sock"
        try:
            # ssh:// through the ssh binary (the user's keys and config), as the docker CLI does.
            c = (docker.DockerClient(base_url=host, timeout=120, use_ssh_client=host.startswith("ssh://")) if host
                 else docker.from_env(timeout=120))
            c.ping()
        except Exception as e:
            raise EngineUnavailable(
                f"Cannot reach the Docker Engine at {where} ({_short(e)}). Is Docker installed and running? "
                "Start it (e.g. `sudo systemctl start docker`, or `sudo dockerd &` where there is no systemd), "
                "check that your user may use it (`sudo usermod -aG docker $USER`), or point DOCKER_HOST at it."
            ) from None
        _clients[key] = c
        return c


def close() -> None:
    """Close the process's clients (their connection pools); a later ``client()`` makes a new one."""
    with _clients_lock:
        for c in _clients.values():
            c.close()
        _clients.clear()


def _short(e: Exception) -> str:
    text = str(e)
    return text if len(text) < 200 else text[:200] + "…"


@dataclass
class BuildLog:
    step: str = ""
    lines: list[str] = field(default_factory=list)


def build(context: Path, tag: str, *, labels: dict[str, str] | None = None, nocache: bool = False,
          platform: str | None = None, progress: Callable[[str], None] = lambda _: None) -> str:
    """Build ``context`` into ``tag``, streaming the engine's output; → the image id. ``platform``
    (``linux/arm64``): the image's, its RUN steps emulated where the host's differs (binfmt_misc).
    A failure names the step that failed and shows its output."""
    api = client().api
    log = BuildLog()
    image_id = None
    stream: Iterator[dict[str, Any]] = api.build(path=str(context), tag=tag, labels=labels or {}, rm=True, forcerm=True,
                                                 decode=True, pull=False, nocache=nocache, platform=platform)
    for chunk in stream:
        if "stream" in chunk:
            for line in chunk["stream"].splitlines():
                if line.startswith("Step "):
                    log.step, log.lines = line, []
                elif line.strip():
                    log.lines.append(line)
                if line.strip():
                    progress(line if line.startswith("Step ") else ToolOutput(line))
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        if "error" in chunk:
            tail = "\n".join(log.lines[-25:])
            raise BuildError(f"Image build failed at {log.step or 'the start'}:\n{tail}\n{chunk['error'].strip()}")
    if image_id is None:
        image_id = client().images.get(tag).id
    return image_id


def image_labels(tag: str) -> dict[str, str] | None:
    """The image's labels, or None when there is no such image."""
    import docker.errors

    try:
        return client().images.get(tag).labels or {}
    except docker.errors.ImageNotFound:
        return None


def image_platform(image: str) -> str | None:
    """``os/architecture[/variant]`` of a local image, or None when there is no such image."""
    import docker.errors

    try:
        attrs = client().images.get(image).attrs
    except docker.errors.ImageNotFound:
        return None
    return "/".join(part for part in (attrs.get("Os"), attrs.get("Architecture"), attrs.get("Variant")) if part)


def address(container: Any, network: str | None = None) -> str | None:
    """The container's IP address on ``network`` (the default bridge's when None), or None when it has none
    there: from the attributes the container was listed or reloaded with."""
    settings = container.attrs["NetworkSettings"]
    if network is None:
        return settings.get("IPAddress") or None
    return ((settings.get("Networks") or {}).get(network) or {}).get("IPAddress") or None


def published(container: Any) -> list[tuple[str, dict[str, str]]]:
    """The container's published ports: (``PORT/PROTO`` in the container, its host binding) pairs."""
    return [(port, binding) for port, bindings in (container.attrs["NetworkSettings"].get("Ports") or {}).items()
            for binding in bindings or []]


def image_exists(tag: str) -> bool:
    return image_labels(tag) is not None


def push(image: str, reference: str, progress: Callable[[str], None] = lambda _: None) -> None:
    """Tag ``image`` as ``reference`` (REGISTRY/REPOSITORY:TAG) and push it there, one line per layer
    pushed (not the engine's progress bars). A registry that cannot be reached is named with the fix."""
    import docker.errors

    repository, _, tag = reference.rpartition(":") if ":" in reference.rsplit("/", 1)[-1] else (reference, "", "latest")
    api = client().api
    try:
        api.tag(image, repository, tag)
    except docker.errors.ImageNotFound:
        raise ModelportError(f"No image {image!r} to push") from None
    progress(f"Pushing {repository}:{tag}")
    registry = repository.split("/", 1)[0]
    for attempt in range(3):  # a push is idempotent; a registry may fail one upload (a 404 mid-upload)
        try:
            for chunk in api.push(repository, tag, stream=True, decode=True):
                if "error" in chunk:
                    raise ModelportError(_push_error(registry, reference, chunk["error"]))
                if chunk.get("status") in ("Pushed", "Layer already exists"):
                    progress(ToolOutput(f"{chunk.get('id', '')}: {chunk['status']}"))
            return
        except docker.errors.APIError as e:
            error = ModelportError(_push_error(registry, reference, str(e.explanation or e)))
        except ModelportError as e:
            error = e
        if ": the registry" in str(error) or ": log in" in str(error) or attempt == 2:  # retrying will not help
            raise error
        progress(f"Pushing {reference} again: {error}")


def _push_error(registry: str, reference: str, error: str) -> str:
    hint = ""
    if "server gave HTTP response to HTTPS client" in error:
        hint = (f": the registry {registry} speaks plain HTTP; add it to the engine's insecure-registries "
                "(/etc/docker/daemon.json) or give it TLS")
    elif any(s in error for s in ("connection refused", "no such host", "i/o timeout", "dial tcp", "no route")):
        hint = f": the registry {registry} cannot be reached from the Docker Engine (is it running, is the address right?)"
    elif "unauthorized" in error or "authentication required" in error:
        hint = f": log in first (docker login {registry})"
    return f"Could not push {reference}: {error.strip()}{hint}"


def save(tag: str, dest: Path) -> None:
    """``docker save`` of the image ``tag`` into the file ``dest``, streamed."""
    import docker.errors

    try:
        with open(dest, "wb") as f:
            for chunk in client().api.get_image(tag):
                f.write(chunk)
    except docker.errors.ImageNotFound:
        raise ModelportError(f"No image {tag!r} to save") from None
    except docker.errors.APIError as e:
        raise ModelportError(f"The Docker Engine could not save {tag}: {_short(e)}") from None


def load(chunks: Iterable[bytes]) -> None:
    """``docker load`` of ``docker save`` output, sent to the engine as it is read."""
    import docker.errors

    try:
        client().images.load(chunks)
    except (docker.errors.ImageLoadError, docker.errors.APIError) as e:
        raise ModelportError(f"The Docker Engine could not load the image: {_short(e)}") from None
