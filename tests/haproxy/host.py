"""HAProxy on the host for fast gateway tests: the configuration a container gets, on loopback ports
and a temporary directory, a DNS server standing in for Docker's, and the Runtime API over TCP.

The stack's configuration finds every replica by DNS name on one port (``server-template ...
{model}-{slot}:8080 resolvers docker``); here the names resolve to loopback addresses of their own
(127.0.0.2, 127.0.0.3...), each with its model server on that one port: the production template
unchanged but for the nameserver's address and the port.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from modelport.deploy.proxy import Layout, Transport
from tests.helpers import free_port, wait_until


def haproxy_binary() -> str:
    """The haproxy on PATH: scripts/test-env.sh installs Debian's 2.6; without it the tests skip, except
    under scripts/test.sh (CI), where nothing may be skipped."""
    found = shutil.which("haproxy")
    if found is None:
        message = "haproxy is not installed: apt-get install haproxy (scripts/test-env.sh does)"
        if os.environ.get("MODELPORT_REQUIRE_DOCKER"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """``haproxy -c``: the configuration parses and every reference in it resolves."""
    return subprocess.run([haproxy_binary(), "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)


class FakeDNS:
    """A DNS server on 127.0.0.1 answering A queries for ``records`` (name → addresses; change it at
    will), NOERROR without answers for other types (HAProxy then asks for A) and NXDOMAIN for unknown
    names, as Docker's embedded DNS does for a service with no container."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-dns", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, client = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            answer = self.answer(query)
            if answer is not None:
                self._sock.sendto(answer, client)

    def answer(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        end = 12
        labels = []
        while end < len(query) and query[end]:
            labels.append(query[end + 1:end + 1 + query[end]].decode("ascii", "replace"))
            end += 1 + query[end]
        if end + 5 > len(query):
            return None
        question = query[12:end + 5]  # name, type, class
        qtype = struct.unpack("!H", query[end + 1:end + 3])[0]
        name = ".".join(labels).lower()
        addresses = self.records.get(name)
        if addresses is None:
            return query[:2] + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + question  # NXDOMAIN
        answers = [] if qtype != 1 else addresses
        records = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(a) for a in answers)
        return query[:2] + struct.pack("!HHHHH", 0x8180, 1, len(answers), 0, 0) + question + records

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


class _Background(http.server.ThreadingHTTPServer):
    """A stand-in server's HTTP server, served from a thread of its own until ``stop``."""

    daemon_threads = True
    request_queue_size = 128  # not 5: the proxy opens dozens at once, refused ones mark the server DOWN

    def __init__(self, host: str, port: int, handler: type[http.server.BaseHTTPRequestHandler], name: str) -> None:
        super().__init__((host, port), handler)
        self._thread = threading.Thread(target=self.serve_forever, name=name, daemon=True)
        self._thread.start()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a health check's connection closed early: nothing to report

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


class EchoServer:
    """A stand-in model server at ``host:port`` that answers every request with what reached it (method,
    raw path, headers) as JSON, and its readiness check with 200: to see what the proxy forwards. A
    path with ``broken`` in it gets no answer: the connection is closed."""

    def __init__(self, host: str, port: int) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                if "broken" in self.path:  # a replica that dies before it answers
                    self.close_connection = True
                    return
                data = json.dumps({"method": self.command, "path": self.path, "headers": [[k.lower(), v] for k, v in self.headers.items()],
                                   "body": len(body)}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, format: str, *args: object) -> None:  # quiet: the health checks are many
                pass

        self._server = _Background(host, port, Handler, name=f"echo-{host}")

    def stop(self) -> None:
        self._server.stop()


class HeldServer:
    """A stand-in model server whose readiness check answers at once and whose other requests wait
    for ``gate`` (set: they do not), then ``delay`` seconds: the requests a proxy has in flight to it
    are known (those sent and not released), or a steady load keeps them open a while."""

    def __init__(self, host: str, port: int, delay: float = 0.0) -> None:
        self.gate = threading.Event()
        self.gate.set()
        gate = self.gate

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path != "/v2/health/ready":
                    gate.wait(30)
                    time.sleep(delay)
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Background(host, port, Handler, name=f"held-{host}")

    def stop(self) -> None:
        self.gate.set()
        self._server.stop()


def host_layout(directory: Path, server_port: int, nameserver: str) -> Layout:
    return Layout(bind=f"127.0.0.1:{free_port()}", admin_port=free_port(), nameserver=nameserver,
                  server_port=server_port, config_dir=str(directory))


def admin_transport(layout: Layout) -> Transport:
    """The Runtime API on the host: the stats socket on 127.0.0.1, the files in the layout's directory."""
    def write(name: str, text: str) -> None:
        (Path(layout.config_dir) / name).write_text(text)

    return Transport.of_tcp("127.0.0.1", layout.admin_port, layout.config_dir, write)


class HostProxy:
    """``haproxy -db -f haproxy.cfg`` on the files of ``files`` (written into the layout's directory),
    started, ready once it answers on its port and its Runtime API, and always stopped."""

    def __init__(self, files: dict[str, str], layout: Layout) -> None:
        directory = Path(layout.config_dir)
        for name, text in files.items():
            (directory / name).write_text(text)
        self.layout = layout
        self.url = f"http://{layout.bind}"
        self.transport = admin_transport(layout)
        self._log = open(directory / "haproxy.log", "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen([haproxy_binary(), "-db", "-f", str(directory / "haproxy.cfg")], stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(self._answers, bool, timeout=20, interval=0.05, what=lambda _: self.output())
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"haproxy exited with {self.proc.returncode}:\n{self.output()}")
        try:
            return httpx.get(f"{self.url}/v2/health/live", timeout=1).status_code == 200 and \
                "Name: HAProxy" in self.transport.send("show info")
        except (httpx.HTTPError, OSError):
            return False

    def output(self) -> str:
        self._log.flush()
        return (Path(self.layout.config_dir) / "haproxy.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
