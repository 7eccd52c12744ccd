"""What a fresh process imports to start: every `modelport` command, server worker and test subprocess pays it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from modelport.serving.swagger import SWAGGER_UI_ENV

_PROBE = """
import json, sys
import modelport.cli.main
cli = sorted(m for m in ("sqlalchemy", "aiohttp", "numpy", "sklearn") if m in sys.modules)
modelport.ModelStore, modelport.save_model  # the public API, imported on first use
from modelport.frameworks.sklearn import skops_io
skops_io()
print(json.dumps({"cli": cli, "torch": "torch" in sys.modules}))
"""


def test_the_command_line_starts_without_the_store_and_skops_without_torch() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == {"cli": [], "torch": False}


# What a model image runs: the serving entry point, a model loaded (its framework imported), the app built, in a
# Python where the libraries a model image does not hold cannot be imported (as there): an attempt from
# modelport's code is recorded; a library's optional import of one (scikit-learn's of rich) just fails.
_SERVING_PROBE = """
import importlib.abc, json, sys
ABSENT, tried = set(json.loads(sys.argv[1])), []

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            frame = sys._getframe(1)
            while frame and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen")):
                frame = frame.f_back
            tried.append([name, frame.f_globals.get("__name__") if frame else None])
            raise ModuleNotFoundError(name)

sys.meta_path.insert(0, Absent())
from modelport.serving.command import serve
serve(["m", "--check"])
import uvicorn.loops.uvloop, uvicorn.protocols.http.httptools_impl
from modelport.serving.app import create_app
from modelport.serving.runtime import ServeSpec, load_models
from modelport.serving.server import app_from_env
create_app(load_models([ServeSpec("m", name="m")]))
print(json.dumps({"modules": sorted({m.split(".")[0] for m in sys.modules}), "tried": tried, "cli": "modelport.cli" in sys.modules,
                  "api": "modelport.api" in sys.modules}))
"""
# The command line's libraries, the docker SDK, HTTP clients, templates, the store's SQLAlchemy: none of them
# is in a model image (it serves the version it holds, an unpacked bundle).
NOT_SERVING = ["typer", "rich", "jinja2", "httpx", "httpcore", "docker", "swagger_ui_bundle", "yaml", "pygments",
               "requests", "pydantic", "sqlalchemy"]


def test_serving_imports_none_of_the_command_line_libraries(home, tmp_path) -> None:
    import numpy as np
    from sklearn.linear_model import LinearRegression

    import modelport
    from modelport.container.context import write_model_dir

    mv = modelport.save_model(LinearRegression().fit(np.eye(3), [1.0, 2.0, 3.0]), "m")
    write_model_dir(mv, modelport.get_store(), tmp_path / "model")  # the model as an image holds it
    # Swagger UI's files, where a model image has them (not its package)
    env = {**os.environ, SWAGGER_UI_ENV: str(tmp_path), "MODELPORT_MODEL_DIR": str(tmp_path / "model")}
    out = subprocess.run([sys.executable, "-c", _SERVING_PROBE, json.dumps(NOT_SERVING)], capture_output=True, text=True,
                         timeout=120, check=True, env=env)
    *_, last = out.stdout.splitlines()
    probe = json.loads(last)
    assert {"modelport", "sklearn", "uvicorn", "starlette"} <= set(probe["modules"])
    assert [t for t in probe["tried"] if (t[1] or "").startswith("modelport")] == []
    assert not probe["cli"] and not probe["api"] and not set(probe["modules"]) & set(NOT_SERVING)
