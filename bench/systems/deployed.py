"""The 'deployed service' table's systems: the model's image alone, and `modelport run` behind its proxy."""

import shutil
import time

from bench.errors import BenchError
from bench.systems.base import Context, Launch, System, predict_row
from bench.systems.modelport import Modelport

ADDRESS_FILE = "network-address"  # in the system's work dir: written by bench/apps/deployed.py once it runs


class ServeDirect(Modelport):
    name = "serve-direct"
    about = "`python -m modelport serve bench-linear --workers 2` on the host, reached directly"
    rows = (predict_row("serve-direct"),)


class Deployed(System):
    """``bench/apps/deployed.py MODE``: the model image built by modelport, alone or as a service. Each is
    loaded twice: on its published 127.0.0.1 port, which Docker's userland proxy (docker-proxy) relays on
    the host, and on the front container's address on its Docker network, the way the kernel's NAT delivers
    a client from another machine to a published port."""

    harness_dists = ("modelport", "docker")
    startup_timeout = 900.0  # the first launch builds the image

    def __init__(self, mode: str, about: str) -> None:
        self.name = mode
        self.about = about
        self.rows = (predict_row(mode), predict_row(f"{mode}-net", via="network"))

    def preflight(self) -> None:
        if shutil.which("docker", path="/usr/bin") is None and shutil.which("docker") is None:
            raise BenchError(f"{self.name} needs a Docker Engine and its client (or pass --skip deployed)")

    def launch(self, ctx: Context, port: int) -> Launch:
        home = ctx.work.parent / "modelport-home"  # one store and image for every row of the table
        (ctx.work / ADDRESS_FILE).unlink(missing_ok=True)
        argv = [str(ctx.python), "deployed.py", self.name, str(port), str(ctx.workload.model_path)]
        return Launch(argv, {"MODELPORT_HOME": str(home), "BENCH_ADDRESS_FILE": str(ctx.work / ADDRESS_FILE)})

    def base_url(self, ctx: Context, port: int, via: str) -> str:
        if via != "network":
            return super().base_url(ctx, port, via)
        path, deadline = ctx.work / ADDRESS_FILE, time.monotonic() + 30
        while not path.exists():  # the app writes it right after the service answers
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not write its network address to {path}")
            time.sleep(0.1)
        return path.read_text().strip()
