"""MLServer + mlserver-sklearn, called through its native V2 REST endpoint."""

import json

from bench.envs import VenvSpec
from bench.procs import free_port
from bench.systems.base import Context, Launch, Row, System, read_v2, v2_body

MODEL = "bench-linear"


class MLServerSKLearn(System):
    name = "mlserver"
    about = (
        "MLServer + mlserver-sklearn, `parallel_workers: 2`, `debug: false`, V2 REST `/v2/models/bench-linear/infer`"
    )
    # MLServer's parallel workers call asyncio.get_event_loop() after installing
    # uvloop's policy; uvloop >= 0.22 raises there ("no current event loop").
    venv = VenvSpec("mlserver", ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"))
    rows = (Row("mlserver", f"/v2/models/{MODEL}/infer", v2_body("input-0"), read_v2),)

    def launch(self, ctx: Context, port: int) -> Launch:
        root = ctx.work / "mlserver"
        model_dir = root / MODEL
        model_dir.mkdir(parents=True, exist_ok=True)
        model_settings = {
            "name": MODEL,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(ctx.workload.model_path)},
        }
        (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
        # parallel_workers is a server setting (settings.json), not a per-model one.
        # gRPC and metrics get free ports too, so nothing collides with other servers.
        settings = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": 2,
            "debug": False,  # debug (the default) turns on uvicorn's access log
        }
        (root / "settings.json").write_text(json.dumps(settings, indent=2))
        return Launch([str(ctx.python.parent / "mlserver"), "start", str(root)], cwd=root)
