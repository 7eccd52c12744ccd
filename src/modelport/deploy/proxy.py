"""The data plane: HAProxy in front of the replicas, and its Runtime API.

A ``modelport run`` service's gateway balances over the replicas of its two slots, each answering to
its slot's network alias (``replicas-blue``, ``replicas-green``); a stack's gateway does the same per
model, over the Compose services ``{model}-blue`` and ``{model}-green``, and does on the request path
what the Python gateway did (routes, path guard, API keys, request ids). The proxy finds the replicas
through Docker's DNS, checks them every 250 ms and balances over the healthy ones. The traffic split
(and a stack's keys and versions) are maps in the proxy, changed at run time through the Runtime API
and written back to the container's files so a restarted proxy keeps them. The image is named by the
digest of its files: one image serves every service, one every stack of the same models.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import socket
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import orjson

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
DOCKER_DNS = "127.0.0.11:53"
SERVER_TIMEOUT = 60  # seconds a replica has to answer (then the proxy answers 504)
SYSLOG = "control:5140"  # a stack's control service, which records the proxy's own answers
TRAFFIC, KEYS, VERSIONS = "traffic.map", "keys.map", "versions.map"
TRAFFIC_MAP = f"{CONFIG_DIR}/{TRAFFIC}"
GATEWAY_REPOSITORY = "modelport/gateway"
DIGEST_LABEL = "io.modelport.gateway-digest"
# A model's name becomes backend, server and DNS names in the proxy's configuration.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
KEY_DIGEST = re.compile(r"[0-9a-f]{64}")
_MAP_WORD = re.compile(r"[^\s]{1,128}")
KEY_BATCH = 100  # keys map lines per Runtime API command: one command must fit HAProxy's 16 kB buffer
_FROM = re.compile(r"^FROM (\S+)", re.MULTILINE)


def _haproxy_json(value: object) -> str:
    """``value`` as compact JSON in a double-quoted HAProxy configuration word."""
    text = orjson.dumps(value).decode()
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("modelport.deploy", "templates"), keep_trailing_newline=True,
                               undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
TEMPLATES.filters["haproxy_json"] = _haproxy_json
# A Runtime API client in the proxy's own image: the official one has bash but no socat.
_ADMIN_CLIENT = f'exec 3<>/dev/tcp/127.0.0.1/{ADMIN_PORT} && printf "%s\\n" "$1" >&3 && cat <&3'


def alias(slot: str) -> str:
    return ALIAS_PREFIX + slot


def other(slot: str) -> str:
    return SLOTS[1 - SLOTS.index(slot)]


@dataclass(frozen=True)
class Layout:
    """Where a gateway listens, finds its replicas and keeps its files: inside its container, always
    these. A host test runs the same configuration on loopback ports and a temporary directory."""

    bind: str = f":{PORT}"
    admin_port: int = ADMIN_PORT
    nameserver: str = DOCKER_DNS
    server_port: int = PORT
    config_dir: str = CONFIG_DIR
    # A second Runtime API on a Unix socket (a Swarm gateway's): a volume of its node shares the socket
    # with the gateway's keysync task there, which cannot reach the container's loopback.
    admin_socket: str = ""

    def address(self, model: str, slot: str) -> str:
        """The DNS name of a stack model's slot: its Compose service."""
        return f"{model}-{slot}"

    def context(self) -> dict[str, Any]:
        # nameserver "": the pod's own resolvers (parse-resolv-conf), as Kubernetes sets them.
        return {"bind": self.bind, "admin_port": self.admin_port, "admin_socket": self.admin_socket, "nameserver": self.nameserver, "address": self.address,
                "server_port": self.server_port, "server_timeout": SERVER_TIMEOUT, "max_replicas": MAX_REPLICAS,
                "slots": SLOTS, "modelport_version": modelport.__version__,
                "traffic_map": f"{self.config_dir}/{TRAFFIC}", "keys_map": f"{self.config_dir}/{KEYS}",
                "versions_map": f"{self.config_dir}/{VERSIONS}"}


def _dockerfile(proxy_image: str, names: list[str]) -> str:
    return TEMPLATES.get_template("proxy.Dockerfile.j2").render(
        modelport_version=modelport.__version__, proxy_image=proxy_image, port=PORT, files=names)


def service_files(proxy_image: str, layout: Layout = Layout()) -> dict[str, str]:
    """A ``modelport run`` service's gateway: backends ``blue`` and ``green``, the traffic map's key ``green``."""
    config = TEMPLATES.get_template("haproxy.cfg.j2").render(**layout.context(), alias_prefix=ALIAS_PREFIX)
    return {"Dockerfile": _dockerfile(proxy_image, ["haproxy.cfg", TRAFFIC]),
            "haproxy.cfg": config, TRAFFIC: traffic_map(0)}


def stack_files(proxy_image: str, models: list[str], default: str | None = None, syslog: str = SYSLOG,
                layout: Layout = Layout()) -> dict[str, str]:
    """A stack's gateway: backends ``{model}-blue`` and ``{model}-green`` found by DNS as
    ``{model}-{slot}``, requests to ``default`` where no model is named, the proxy's own 5xx answers
    logged to ``syslog`` (UDP ``host:port``). The maps start with all traffic on blue, no version and
    no key: the stack hands the proxy those at run time (Runtime.set_share, set_version, set_keys)."""
    if not models or default is not None and default not in models:
        raise ModelportError(f"A stack's gateway needs its models and a default among them (got {models}, {default!r})")
    for name in models:
        if not MODEL_NAME.fullmatch(name):
            raise ModelportError(f"Model name {name!r} cannot name a proxy backend: letters, digits, '.', '_' and '-' only")
    config = TEMPLATES.get_template("haproxy-stack.cfg.j2").render(
        **layout.context(), models=models, default=default, syslog=syslog, max_body=defaults.MAX_BODY)
    maps = {TRAFFIC: map_text({f"{m}-green": 0 for m in models}), VERSIONS: "", KEYS: ""}
    return {"Dockerfile": _dockerfile(proxy_image, ["haproxy.cfg", *maps]), "haproxy.cfg": config, **maps}


def traffic_map(green: int) -> str:
    return map_text({"green": green})


def map_text(entries: Mapping[str, object]) -> str:
    """A map file: ``KEY VALUE`` per line."""
    return "".join(f"{k} {v}\n" for k, v in entries.items())


def files_tag(files: Mapping[str, str]) -> str:
    """The gateway image's tag: the digest of the files it is built from."""
    return f"{GATEWAY_REPOSITORY}:{files_digest(files)}"


def files_digest(files: Mapping[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}\0{v}\0" for k, v in sorted(files.items())).encode()).hexdigest()[:12]


def gateway_image(proxy_image: str, progress: Any = lambda _: None) -> str:
    """A service's gateway image on ``proxy_image``, built when missing or built from other files."""
    return build_gateway(service_files(proxy_image), progress)


def build_gateway(files: Mapping[str, str], progress: Any = lambda _: None) -> str:
    """The image of these gateway files (its Dockerfile's FROM pulled when missing), built unless it exists."""
    tag = files_tag(files)
    if engine.image_exists(tag):
        return tag
    proxy_image = _FROM.search(files["Dockerfile"]).group(1)
    if not engine.image_exists(proxy_image):
        progress(f"Pulling {proxy_image}")
        _pull(proxy_image)
    progress(f"Building the gateway image {tag} from {proxy_image}")
    with tempfile.TemporaryDirectory(prefix="modelport-gateway-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        engine.build(Path(tmp), tag, labels={DIGEST_LABEL: files_digest(files)}, progress=progress)
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

    slot: str  # the backend's name without the Runtime's prefix: "blue", "green"
    name: str
    address: str | None  # the replica's IP, None while the slot is unused
    status: str  # UP, DOWN, DRAIN, MAINT, "UP 1/2" while changing...
    sessions: int


def replica_view(backend: list[Server], share: int, address: str | None) -> tuple[str, int]:
    """What the proxy sees of the replica at ``address`` in its slot's ``backend`` servers: its check,
    and the percent of the model's requests it gets (the slot's ``share``, split over the UP ones)."""
    mine = next((s for s in backend if s.address and s.address == address), None)
    up = [s for s in backend if s.status == "UP"]
    return (mine.status if mine else "-"), (round(share / len(up)) if mine in up else 0)


@dataclass(frozen=True)
class Transport:
    """How a Runtime reaches one proxy: ``send`` one Runtime API command and get its answer, ``write``
    a file of the proxy's configuration directory (``config_dir``, where its maps are)."""

    send: Callable[[str], str]
    write: Callable[[str, str], None]  # (file name, text)
    config_dir: str = CONFIG_DIR
    name: str = "the proxy"

    @classmethod
    def of_container(cls, container: Any) -> Transport:
        """A gateway container: commands through ``docker exec``, files by ``put_archive``."""
        def send(line: str) -> str:
            result = container.exec_run(["bash", "-c", _ADMIN_CLIENT, "modelport", line])
            output = result.output.decode(errors="replace")
            if result.exit_code != 0:
                raise ModelportError(f"The proxy in {container.name} did not answer {line!r}: {output.strip()}")
            return output

        def write(name: str, text: str) -> None:
            tar = io.BytesIO()
            with tarfile.open(fileobj=tar, mode="w") as t:
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
                t.addfile(info, io.BytesIO(data))
            if not container.put_archive(CONFIG_DIR, tar.getvalue()):
                raise ModelportError(f"Could not write {name} into {container.name}")

        return cls(send, write, CONFIG_DIR, f"the proxy in {container.name}")

    @classmethod
    def of_tcp(cls, host: str = "127.0.0.1", port: int = ADMIN_PORT, config_dir: str = CONFIG_DIR,
               write: Callable[[str, str], None] | None = None) -> Transport:
        """The Runtime API over TCP: a proxy whose admin socket this process can reach (its pod's
        loopback). Without ``write`` the maps change in the proxy's memory only (a read-only ConfigMap)."""
        return cls(_stream_send(lambda: socket.create_connection((host, port), timeout=10)),
                   write or (lambda _name, _text: None), config_dir, f"the proxy at {host}:{port}")

    @classmethod
    def of_unix(cls, path: str, config_dir: str = CONFIG_DIR) -> Transport:
        """The Runtime API on a Unix socket shared through a volume (a Swarm gateway's keysync task):
        the maps change in the proxy's memory only, the keysync task keeps them."""
        def connect() -> socket.socket:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            try:
                s.connect(path)
            except OSError:
                s.close()
                raise
            return s

        return cls(_stream_send(connect), lambda _name, _text: None, config_dir, f"the proxy at {path}")

    @classmethod
    def of_address(cls, admin: str) -> Transport:
        """``HOST:PORT`` (TCP) or ``unix:PATH``."""
        if admin.startswith("unix:"):
            if not admin[5:].startswith("/"):
                raise ModelportError(f"--admin {admin!r}: expected unix:/ABSOLUTE/PATH")
            return cls.of_unix(admin[5:])
        host, _, port = admin.rpartition(":")
        if not host or not port.isdigit():
            raise ModelportError(f"--admin {admin!r}: expected HOST:PORT or unix:PATH")
        return cls.of_tcp(host, int(port))


def _stream_send(connect: Callable[[], socket.socket]) -> Callable[[str], str]:
    """One Runtime API command per connection, as the container's client sends it (printf "%s\n")."""
    def send(line: str) -> str:
        with connect() as s:
            s.sendall(f"{line}\n".encode())
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    return send


class Runtime:
    """HAProxy's Runtime API of one gateway, for the backends ``{prefix}blue`` and ``{prefix}green``:
    prefix ``""`` for a service's, ``"{model}-"`` for a stack model's. Every map change takes effect
    at once, and is written back to the map's file, whole, so a restarted proxy keeps it."""

    def __init__(self, transport: Transport, prefix: str = "") -> None:
        self.transport = transport
        self.prefix = prefix

    @classmethod
    def of_container(cls, container: Any, prefix: str = "") -> Runtime:
        return cls(Transport.of_container(container), prefix)

    def send(self, line: str) -> str:
        return self.transport.send(line)

    def wait_answering(self, timeout: float) -> None:
        """Until the proxy answers its Runtime API: one that just started can take a connection and close it
        unanswered before its worker serves it (an empty answer, which a map change would misread)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if "Name:" in (answer := self.send("show info")):
                    return
                why = f"its answer was {answer.strip()[:200]!r}"
            except ModelportError as e:
                why = str(e)
            if time.monotonic() > deadline:
                raise ModelportError(f"{self.transport.name} does not answer its Runtime API: {why}")
            time.sleep(0.1)

    def servers(self, slot: str | None = None) -> list[Server]:
        """The server slots of this prefix's backends (of ``slot``'s only, if given)."""
        return [s for s in self.servers_all() if s.slot in SLOTS and (slot is None or s.slot == slot)]

    def servers_all(self) -> list[Server]:
        """The server slots of every backend whose name starts with the prefix (with prefix "": all)."""
        text = self.send("show stat -1 4 -1")  # servers only
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return [Server(r["pxname"].removeprefix(self.prefix), r["svname"], r["addr"].rsplit(":", 1)[0] or None,
                       r["status"], int(r["scur"] or 0))
                for r in rows if r.get("pxname", "").startswith(self.prefix) and r.get("svname")]

    def shares(self) -> dict[str, int]:
        """The percent of requests each slot gets."""
        green = int(self.entries(TRAFFIC).get(f"{self.prefix}green", 0))
        return {"blue": 100 - green, "green": green}

    def set_share(self, slot: str, percent: int) -> None:
        """Send ``percent`` of requests to ``slot``, the rest to the other: at once, and after a restart."""
        if slot not in SLOTS or not 0 <= percent <= 100:
            raise ModelportError(f"Invalid traffic share {percent}% for slot {slot!r}")
        self.set_entry(TRAFFIC, f"{self.prefix}green", str(percent if slot == "green" else 100 - percent))

    def set_version(self, slot: str, version: str) -> None:
        """The version ``{prefix}{slot}`` serves, for the proxy's log lines."""
        self.set_entry(VERSIONS, f"{self.prefix}{slot}", version)

    def keys(self) -> dict[str, str]:
        """The keys map: the sha256 (hex) of each active API key → its key id."""
        return self.entries(KEYS)

    def set_keys(self, keys: Mapping[str, str]) -> None:
        """Replace the keys map by ``keys`` (sha256 hex → key id) in one atomic step: see replace_map."""
        for digest, key_id in keys.items():
            if not KEY_DIGEST.fullmatch(digest) or not _MAP_WORD.fullmatch(key_id):
                raise ModelportError(f"Invalid keys map entry {digest!r} → {key_id!r}: a lowercase sha256 hex and a key id")
        self.replace_map(KEYS, keys)

    def replace_map(self, name: str, entries: Mapping[str, str]) -> None:
        """Replace the map file ``name`` by ``entries`` in one atomic step (HAProxy's map versions): an
        entry in both the old and the new map is never missing meanwhile (a key never refused)."""
        for key, value in entries.items():
            if not _MAP_WORD.fullmatch(key) or not _MAP_WORD.fullmatch(value):
                raise ModelportError(f"Invalid {name} entry {key!r} → {value!r}")
        path = self._path(name)
        answer = self.send(f"prepare map {path}")
        found = re.search(r"New version created: (\d+)", answer)
        if found is None:
            raise ModelportError(f"{self.transport.name} could not prepare {name}: {answer.strip()}")
        version = found.group(1)
        ordered = sorted(entries.items())
        for i in range(0, len(ordered), KEY_BATCH):
            lines = "".join(f"{key} {value}\n" for key, value in ordered[i:i + KEY_BATCH])
            self._command(f"add map @{version} {path} <<\n{lines}", name)  # the empty line ends it
        self._command(f"commit map @{version} {path}", name)
        self.transport.write(name, map_text(dict(ordered)))

    def entries(self, name: str) -> dict[str, str]:
        """The map file ``name`` as the proxy holds it now."""
        answer = self.send(f"show map {self._path(name)}")
        entries = {}
        for line in answer.splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0].startswith("0x"):
                entries[parts[1]] = parts[2]
            elif line.strip():
                raise ModelportError(f"{self.transport.name} cannot show {name}: {answer.strip()}")
        return entries

    def set_entry(self, name: str, key: str, value: str) -> None:
        """One entry of the map file ``name``, set or added; then the whole file as the proxy has it."""
        if not _MAP_WORD.fullmatch(key) or not _MAP_WORD.fullmatch(value):
            raise ModelportError(f"Invalid {name} entry {key!r} → {value!r}")
        verb = "set" if key in self.entries(name) else "add"
        self._command(f"{verb} map {self._path(name)} {key} {value}", name)
        # Read back, not computed: an entry another client set meanwhile is kept in the file too.
        self.transport.write(name, map_text(self.entries(name)))

    def set_state(self, server: Server, state: str) -> None:
        backend = self.prefix + server.slot
        answer = self.send(f"set server {backend}/{server.name} state {state}")
        if answer.strip():
            raise ModelportError(f"The proxy refused to set {backend}/{server.name} {state}: {answer.strip()}")

    def set_health(self, server: Server, health: str) -> None:
        """What the next checks would find (``up``: the replica said it is ready), at once; the checks go on."""
        backend = self.prefix + server.slot
        answer = self.send(f"set server {backend}/{server.name} health {health}")
        if answer.strip():
            raise ModelportError(f"The proxy refused to set {backend}/{server.name}'s health {health}: {answer.strip()}")

    def _path(self, name: str) -> str:
        return f"{self.transport.config_dir}/{name}"

    def _command(self, line: str, what: str) -> None:
        """A command that answers nothing when it succeeds."""
        answer = self.send(line)
        if answer.strip():
            raise ModelportError(f"{self.transport.name} refused to change {what}: {answer.strip()}")
