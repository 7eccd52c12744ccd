"""modelport itself, in the project's environment: its /predict and its Open Inference Protocol v2 rows."""

import importlib.util
import os
import subprocess
import sys
from shutil import rmtree

from bench.errors import BenchError
from bench.systems.base import Context, Launch, Row, System, predict_row, read_v2, v2_body

MODEL = "bench-linear"
# Runs in a child so MODELPORT_HOME is set before modelport is imported.
SAVE = "import pickle, sys, modelport\nwith open(sys.argv[1], 'rb') as f:\n    model = pickle.load(f)\nmodelport.save_model(model, sys.argv[2])\n"


class Modelport(System):
    name = "modelport"
    about = f"`modelport.save_model` + `python -m modelport serve {MODEL} --workers 2`"
    harness_dists = ("modelport", "uvicorn", "uvloop", "httptools", "scikit-learn", "numpy")
    rows = (predict_row("modelport"), Row("modelport-v2", f"/v2/models/{MODEL}/infer", v2_body("input"), read_v2))

    def preflight(self) -> None:
        if importlib.util.find_spec("modelport") is None:
            raise BenchError(
                f"modelport is not importable from {sys.executable}.\n"
                "  Install the project into this environment: pip install -e /work/main\n"
                "  or leave it out: --skip modelport,modelport-v2"
            )

    def _env(self, ctx: Context) -> dict[str, str]:
        return {"MODELPORT_HOME": str(ctx.work / "modelport-home")}

    def prepare(self, ctx: Context) -> None:
        env = self._env(ctx)
        rmtree(env["MODELPORT_HOME"], ignore_errors=True)
        os.makedirs(env["MODELPORT_HOME"])
        done = subprocess.run(
            [str(ctx.python), "-c", SAVE, str(ctx.workload.model_path), MODEL],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise BenchError(f"modelport.save_model(model, {MODEL!r}) failed:\n{tail}")

    def launch(self, ctx: Context, port: int) -> Launch:
        argv = [
            str(ctx.python),
            "-m",
            "modelport",
            "serve",
            MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ]
        return Launch(argv, self._env(ctx), cwd=ctx.work)
