"""The data plane of a service: HAProxy in front of its replicas, and its Runtime API.

Every replica of a release answers to its slot's network alias (``replicas-blue``, ``replicas-green``);
the proxy finds them through Docker's DNS, checks them every 250 ms and balances over the healthy
ones. Which slot gets how much traffic is a map in the proxy, changed at run time and written back
to the container's file so a restarted proxy keeps it. One gateway image serves every service.
"""

from __future__ import annotations

import csv
import hashlib
import io
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

import modelport
from modelport import defaults
from modelport.container import engine
from modelport.errors import ModelportError

SLOTS = ("blue", "green")
ALIAS_PREFIX = "replicas-"
MAX_REPLICAS = 16
PORT = defaults.PORT
ADMIN_PORT = 9999
CONFIG_DIR = "/usr/local/etc/haproxy"
TRAFFIC_MAP = f"{CONFIG_DIR}/traffic.map"
DIGEST_LABEL = "io.modelport.gateway-digest"
TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("modelport.deploy", "templates"), keep_trailing_newline=True,
                               undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
# A Runtime API client in the proxy's own image: the official one has bash but no socat.
_ADMIN_CLIENT = f'exec 3<>/dev/tcp/127.0.0.1/{ADMIN_PORT} && printf "%s\\n" "$1" >&3 && cat <&3'


def alias(slot: str) -> str:
    return ALIAS_PREFIX + slot


def other(slot: str) -> str:
    return SLOTS[1 - SLOTS.index(slot)]


def _files(proxy_image: str) -> dict[str, str]:
    context = {"modelport_version": modelport.__version__, "port": PORT, "admin_port": ADMIN_PORT, "slots": SLOTS,
               "alias_prefix": ALIAS_PREFIX, "max_replicas": MAX_REPLICAS, "traffic_map": TRAFFIC_MAP,
               "proxy_image": proxy_image}
    return {"Dockerfile": TEMPLATES.get_template("proxy.Dockerfile.j2").render(**context),
            "haproxy.cfg": TEMPLATES.get_template("haproxy.cfg.j2").render(**context),
            "traffic.map": traffic_map(0)}


def traffic_map(green: int) -> str:
    return f"green {green}\n"


def gateway_image(proxy_image: str, progress: Any = lambda _: None) -> str:
    """The gateway image on ``proxy_image``, built when missing or built from other files."""
    files = _files(proxy_image)
    digest = hashlib.sha256("".join(f"{k}\0{v}\0" for k, v in sorted(files.items())).encode()).hexdigest()[:12]
    tag = f"modelport/gateway:{digest}"
    if engine.image_exists(tag):
        return tag
    if not engine.image_exists(proxy_image):
        progress(f"Pulling {proxy_image}")
        _pull(proxy_image)
    progress(f"Building the gateway image {tag} from {proxy_image}")
    with tempfile.TemporaryDirectory(prefix="modelport-gateway-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        engine.build(Path(tmp), tag, labels={DIGEST_LABEL: digest}, progress=progress)
    return tag


def _pull(image: str) -> None:
    import docker.errors

    try:
        engine.client().images.pull(image)
    except docker.errors.APIError as e:
        raise ModelportError(f"Cannot pull the proxy image {image!r} ({e.explanation or e}): "
                             "pull it yourself, or pass --proxy-image (MODELPORT_PROXY_IMAGE) to use another") from None


@dataclass
class Server:
    """One server slot of a backend as the proxy sees it."""

    slot: str
    name: str
    address: str | None  # the replica's IP, None while the slot is unused
    status: str  # UP, DOWN, DRAIN, MAINT, "UP 1/2" while changing...
    sessions: int


class Runtime:
    """HAProxy's Runtime API in a running gateway container, over ``docker exec``."""

    def __init__(self, container: Any) -> None:
        self.container = container

    def send(self, line: str) -> str:
        result = self.container.exec_run(["bash", "-c", _ADMIN_CLIENT, "modelport", line])
        output = result.output.decode(errors="replace")
        if result.exit_code != 0:
            raise ModelportError(f"The proxy in {self.container.name} did not answer {line!r}: {output.strip()}")
        return output

    def servers(self, slot: str | None = None) -> list[Server]:
        text = self.send("show stat -1 4 -1")  # servers only
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return [Server(r["pxname"], r["svname"], r["addr"].rsplit(":", 1)[0] or None, r["status"], int(r["scur"] or 0))
                for r in rows if r.get("pxname") in SLOTS and (slot is None or r["pxname"] == slot)]

    def shares(self) -> dict[str, int]:
        """The percent of requests each slot gets."""
        text = self.send(f"show map {TRAFFIC_MAP}")
        green = next((int(parts[2]) for line in text.splitlines() if len(parts := line.split()) == 3 and parts[1] == "green"), 0)
        return {"blue": 100 - green, "green": green}

    def set_share(self, slot: str, percent: int) -> None:
        """Send ``percent`` of requests to ``slot``, the rest to the other: at once, and after a restart."""
        green = percent if slot == "green" else 100 - percent
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w") as t:
            data = traffic_map(green).encode()
            info = tarfile.TarInfo("traffic.map")
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            t.addfile(info, io.BytesIO(data))
        if not self.container.put_archive(CONFIG_DIR, tar.getvalue()):
            raise ModelportError(f"Could not write the traffic split into {self.container.name}")
        answer = self.send(f"set map {TRAFFIC_MAP} green {green}")
        if answer.strip():
            raise ModelportError(f"The proxy in {self.container.name} refused the traffic split: {answer.strip()}")

    def set_state(self, server: Server, state: str) -> None:
        answer = self.send(f"set server {server.slot}/{server.name} state {state}")
        if answer.strip():
            raise ModelportError(f"The proxy refused to set {server.slot}/{server.name} {state}: {answer.strip()}")
