"""The HTTP limit: a constant-answer ASGI app on modelport's server stack, in the project's env."""

from bench.errors import BenchError
from bench.systems.base import Context, Launch, Row, System, features_body


class ASGILimit(System):
    name = "asgi-limit"
    about = "bare ASGI app, constant JSON (reads the body), uvicorn httptools+uvloop, 2 workers, no access log"
    rows = (Row("asgi-limit", "/predict", features_body, None),)
    harness_dists = ("uvicorn", "uvloop", "httptools")
    startup_timeout = 30.0

    def preflight(self) -> None:
        import importlib.util

        missing = [m for m in ("uvicorn", "uvloop", "httptools") if importlib.util.find_spec(m) is None]
        if missing:
            raise BenchError(
                f"asgi-limit needs {', '.join(missing)} in the project's environment "
                "(pip install -e /work/main), or pass --skip asgi-limit"
            )

    def launch(self, ctx: Context, port: int) -> Launch:
        argv = [
            str(ctx.python),
            "-m",
            "uvicorn",
            "raw_asgi:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--http",
            "httptools",
            "--loop",
            "uvloop",
            "--workers",
            "2",
            "--no-access-log",
        ]
        return Launch(argv)
