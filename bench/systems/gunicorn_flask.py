"""The same Flask app under gunicorn with 2 (default, sync) workers."""

from bench.envs import VenvSpec
from bench.systems.base import Context, Launch, System, predict_row
from bench.systems.flask_dev import FLASK


class GunicornFlask(System):
    name = "gunicorn"
    about = "the same Flask app under gunicorn, 2 sync workers"
    venv = VenvSpec("gunicorn", (FLASK, "gunicorn==27.0.1"))
    rows = (predict_row("gunicorn"),)

    def launch(self, ctx: Context, port: int) -> Launch:
        argv = [str(ctx.python), "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}", "flask_app:app"]
        return Launch(argv, {"MODEL_PATH": str(ctx.workload.model_path)})
