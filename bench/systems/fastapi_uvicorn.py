"""A hand-written FastAPI endpoint under uvicorn with 2 workers."""

from bench.envs import VenvSpec
from bench.systems.base import Context, Launch, System, predict_row


class FastAPIUvicorn(System):
    name = "fastapi"
    about = "FastAPI + pydantic body model, sync `def` endpoint, uvicorn[standard] 2 workers, no access log"
    venv = VenvSpec("fastapi", ("fastapi==0.165.0", "pydantic==2.14.3", "uvicorn[standard]==0.54.0"))
    rows = (predict_row("fastapi"),)

    def launch(self, ctx: Context, port: int) -> Launch:
        argv = [
            str(ctx.python),
            "-m",
            "uvicorn",
            "fastapi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--no-access-log",
        ]
        return Launch(argv, {"MODEL_PATH": str(ctx.workload.model_path)})
