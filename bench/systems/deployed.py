"""The 'deployed service' table's systems: the model's image alone, and `modelport run` behind its proxy."""

import shutil

from bench.errors import BenchError
from bench.systems.base import Context, Launch, System, predict_row
from bench.systems.modelport import Modelport


class ServeDirect(Modelport):
    name = "serve-direct"
    about = "`python -m modelport serve bench-linear --workers 2` on the host, reached directly"
    rows = (predict_row("serve-direct"),)


class Deployed(System):
    """``bench/apps/deployed.py MODE``: the model image built by modelport, alone or as a service."""

    harness_dists = ("modelport", "docker")
    startup_timeout = 900.0  # the first launch builds the image

    def __init__(self, mode: str, about: str) -> None:
        self.name = mode
        self.about = about
        self.rows = (predict_row(mode),)

    def preflight(self) -> None:
        if shutil.which("docker", path="/usr/bin") is None and shutil.which("docker") is None:
            raise BenchError(f"{self.name} needs a Docker Engine and its client (or pass --skip deployed)")

    def launch(self, ctx: Context, port: int) -> Launch:
        home = ctx.work.parent / "modelport-home"  # one store and image for every row of the table
        argv = [str(ctx.python), "deployed.py", self.name, str(port), str(ctx.workload.model_path)]
        return Launch(argv, {"MODELPORT_HOME": str(home)})
