"""``serve``: the one command a model image runs, parsed with argparse so that serving imports none of the
command-line libraries (Typer, Rich, Jinja2, httpx). ``modelport serve`` hands its arguments to this parser,
so its options are declared once, here; an image runs ``python -m modelport.serving serve REF ...``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from modelport import defaults
from modelport.errors import ModelportError

if TYPE_CHECKING:
    from modelport.serving.runtime import ServeSpec


def _positive(kind: type) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text} is less than 1")
        return value
    return parse


def _not_negative(text: str) -> float:
    if (value := float(text)) < 0:
        raise argparse.ArgumentTypeError(f"{text} is less than 0")
    return value


def parser(prog: str = "modelport serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Serve models over HTTP: /predict, the Open Inference Protocol v2, /metrics, /docs.")
    p.add_argument("refs", nargs="+", metavar="REF", help="Models to serve: NAME, NAME:3, NAME@alias, or SERVED_NAME=REF. The first is the default for /predict.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=defaults.PORT)
    p.add_argument("--workers", type=int, help="Worker processes (default: one per core).")
    p.add_argument("--max-batch-size", type=_positive(int), help="Adaptive batching: rows per model call (1: off; default: the model's own, off for tabular models).")
    p.add_argument("--max-latency-ms", type=_not_negative, help="Adaptive batching: how long a batch may wait to fill (default: the model's own, else 0).")
    p.add_argument("--max-body-mb", type=float, default=defaults.MAX_BODY / 1024 / 1024, help="Largest request body accepted.")
    p.add_argument("--max-images", type=_positive(int), help=f"Image models: most images in one request (default {defaults.MAX_IMAGES}).")
    p.add_argument("--max-request-pixels", type=_positive(int), help=f"Image models: most pixels one request may decode, all its images together (default {defaults.MAX_REQUEST_PIXELS}).")
    p.add_argument("--log-format", default="text", help="text or json.")
    p.add_argument("--access-log", action="store_true", help="Log every request.")
    p.add_argument("--log-db", help="Record every prediction in this database (e.g. sqlite:///predictions.db); query it with `modelport predictions`.")
    p.add_argument("--spool-dir", help="With --log-db: where records wait while the database is unavailable (default: under MODELPORT_HOME).")
    p.add_argument("--trust-proxy-headers", action="store_true", help="Behind modelport's proxy only: record the API key id it sends in X-Modelport-Key-Id.")
    # What a client may cost: how long it may take, how much it may hold.
    p.add_argument("--header-timeout", type=float, default=defaults.HEADER_TIMEOUT, help="Seconds a client has to send a request's head (from connecting, or from its first byte); then 408 and close.")
    p.add_argument("--body-timeout", type=float, default=defaults.BODY_TIMEOUT, help="Seconds a client has to send a request's whole body once its head arrived; then 408 and close.")
    p.add_argument("--keep-alive", type=float, default=defaults.KEEP_ALIVE, help="Seconds an idle connection stays open between requests.")
    p.add_argument("--max-buffered-bytes", type=_positive(int), default=defaults.MAX_BUFFERED, help="Bytes of request bodies one worker reads at once; a request beyond it gets a 503 before its body is read.")
    p.add_argument("--warmup", action="append", metavar="[NAME=]FILE", help="A v2 inference request (JSON) for the model's warm-up prediction (default: the first model; inputs generated from its signature otherwise; env MODELPORT_WARMUP, space-separated). Ready only once every model answered one.")
    p.add_argument("--check", action="store_true", help="Load the models and exit without serving (an image's build runs this).")
    return p


def serve(argv: Sequence[str], *, prog: str = "modelport serve", progress: Callable[[str], None] = lambda _: None) -> None:
    """Parse ``serve``'s arguments (``argv``, without the word ``serve``) and serve until interrupted."""
    from modelport.serving.batching import BatchConfig
    from modelport.serving.limits import ImageLimits, ReadLimits
    from modelport.serving.runtime import ServeSpec
    from modelport.serving.server import serve as run_server
    from modelport.store import parse_ref

    a = parser(prog).parse_args(list(argv))
    batch = BatchConfig(max_batch_size=a.max_batch_size, max_latency_ms=a.max_latency_ms)
    images = ImageLimits(max_images=a.max_images, max_request_pixels=a.max_request_pixels)
    specs = [ServeSpec.parse(r, batch, images) for r in a.refs]
    warmup = _warmup_files(a.warmup or os.environ.get("MODELPORT_WARMUP", "").split(),
                           specs[0].name or parse_ref(specs[0].ref).name)
    if a.check:
        check(specs, warmup)
        print(f"{', '.join(a.refs)}: loaded" + (", warm-up answered" if warmup else ""), flush=True)
        return
    run_server(specs, host=a.host, port=a.port, workers=a.workers, max_body=int(a.max_body_mb * 1024 * 1024),
               log_format=a.log_format, access_log=a.access_log, log_db=a.log_db, trust_proxy_headers=a.trust_proxy_headers,
               spool_dir=a.spool_dir, limits=ReadLimits(a.header_timeout, a.body_timeout, a.keep_alive, a.max_buffered_bytes),
               warmup=warmup, on_ready=f"Serving {', '.join(a.refs)} on http://{a.host}:{a.port}  (docs: http://{a.host}:{a.port}/docs)",
               progress=progress)


def check(specs: list[ServeSpec], warmup: dict[str, str]) -> None:
    """``--check``: the models load, and answer the given warm-up inputs (an image's build runs this: a
    warm-up baked into the image that fails stops the build, not the image's start)."""
    import asyncio

    from modelport.serving.runtime import check_models, load_models
    from modelport.serving.server import given_warmups
    from modelport.serving.startup import warm_up

    given = given_warmups(specs, warmup)
    check_models(specs)
    models = load_models(specs)
    try:
        if given:
            asyncio.run(warm_up(models, given))
    finally:
        models.close()


def _warmup_files(items: list[str], default: str) -> dict[str, str]:
    """``--warmup [NAME=]FILE`` items → {served name: file}; without a name, the first model's."""
    files = {}
    for item in items:
        name, sep, path = item.rpartition("=")
        files[name if sep else default] = path
    return files


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m modelport.serving serve REF ... [OPTIONS]``: the entry point of a model image. The word
    ``serve`` keeps the arguments that stacks, Compose files and Kubernetes manifests pass the same as
    ``modelport serve``'s. A domain error is one line on stderr and exit status 1, never a traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "serve":
        sys.exit("usage: python -m modelport.serving serve REF [REF ...] [OPTIONS]  (--help after serve: the options)")
    try:
        serve(args[1:], prog="python -m modelport.serving serve", progress=lambda line: print(f"  {line}", flush=True))
    except ModelportError as e:
        print(f"Error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("Interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
