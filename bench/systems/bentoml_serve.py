"""BentoML: a @bentoml.service class (workers=2) run by `bentoml serve`."""

from bench.envs import VenvSpec
from bench.systems.base import Context, Launch, System, predict_row


class BentoMLServe(System):
    name = "bentoml"
    about = "BentoML `@bentoml.service(workers=2)`, access log off, `bentoml serve`"
    venv = VenvSpec("bentoml", ("bentoml==1.4.39",))
    rows = (predict_row("bentoml"),)

    def launch(self, ctx: Context, port: int) -> Launch:
        bentoml = ctx.python.parent / "bentoml"
        argv = [str(bentoml), "serve", "bentoml_service:LinearRegression", "--host", "127.0.0.1", "--port", str(port)]
        env = {
            "MODEL_PATH": str(ctx.workload.model_path),
            "BENTOML_HOME": str(ctx.work / "bentoml-home"),
            "BENTOML_DO_NOT_TRACK": "true",  # no usage tracking calls from a benchmark
        }
        return Launch(argv, env)
