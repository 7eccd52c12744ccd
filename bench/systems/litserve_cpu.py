"""LitServe: a LitAPI on CPU with workers_per_device=2."""

from bench.envs import VenvSpec
from bench.systems.base import Context, Launch, System, predict_row


class LitServeCPU(System):
    name = "litserve"
    about = "LitServe `LitAPI`, accelerator=cpu, workers_per_device=2 (so 2 API server processes + 2 inference workers), access log off"
    venv = VenvSpec("litserve", ("litserve==0.2.19",))
    rows = (predict_row("litserve"),)

    def launch(self, ctx: Context, port: int) -> Launch:
        env = {"MODEL_PATH": str(ctx.workload.model_path)}
        return Launch([str(ctx.python), "litserve_app.py", "127.0.0.1", str(port)], env)
