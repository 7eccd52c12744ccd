"""The tutorial's Flask app on Flask's own development server, exactly as written."""

from bench.envs import VenvSpec
from bench.systems.base import Context, Launch, System, predict_row

FLASK = "flask==3.1.3"


class FlaskDev(System):
    name = "flask"
    about = "Flask dev server (`app.run`, threaded by default; no worker knob used, as in the tutorial)"
    venv = VenvSpec("flask", (FLASK,))
    rows = (predict_row("flask"),)

    def launch(self, ctx: Context, port: int) -> Launch:
        env = {"MODEL_PATH": str(ctx.workload.model_path)}
        return Launch([str(ctx.python), "flask_app.py", "127.0.0.1", str(port)], env)
