"""The ``modelport`` command: a thin layer over the Python API."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import typer

from modelport import __version__, defaults
from modelport.cli import containers, k8s, models, predictions, stack
from modelport.cli.output import console, err, error, progress, success
from modelport.errors import ModelportError
from modelport.extras import require

app = typer.Typer(help="modelport: from a trained model to a running, monitored container service.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.add_typer(models.app, name="models")
containers.register(app)
app.add_typer(stack.app, name="stack")
app.add_typer(predictions.app, name="predictions")
app.add_typer(k8s.app, name="k8s")


def _version(value: bool) -> None:
    if value:
        print(f"modelport {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version.")) -> None:
    pass


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", help="CSV file with a header line."),
    target: str = typer.Option(..., "--target", help="The column to predict."),
    name: str = typer.Option(..., "--name", help="Model name in the store."),
    model: str = typer.Option("linear-regression", "--model", help="linear-regression, ridge, random-forest, gradient-boosting, logistic-regression or random-forest-classifier."),
    test_size: float = typer.Option(0.2, "--test-size", help="Fraction of rows held out for the test metrics."),
    seed: int = typer.Option(42, "--seed", help="Random seed for the split and the model."),
    description: str = typer.Option("", "--description"),
    in_container: bool = typer.Option(False, "--in-container", help="Train inside a container built from the serving base image."),
    base_image: str = typer.Option(None, "--base-image", help="With --in-container: the base image."),
) -> None:
    """Train a tabular model from a CSV and register it as a new version."""
    if in_container:
        from modelport.container.training import train_in_container

        result = train_in_container(data, target, name, model=model, test_size=test_size, seed=seed,
                                    base_image=base_image, progress=progress)
    else:
        from modelport.training.trainer import train

        with console.status("Training…") as status, interrupt_at_once():
            result = train(data, target, name, model=model, test_size=test_size, seed=seed, description=description,
                           progress=lambda m: (status.update(m), progress(m)))
    success(f"Registered {result.version.ref}", f" ({result.n_train} training rows, {result.n_test} test rows)")
    for k, v in result.metrics.items():
        console.print(f"  {k:<9} {v:.4f}")


@app.command("import")
def import_cmd(
    name: str,
    model_file: Path,
    framework: str = typer.Option(None, "--framework", help="sklearn, onnx, xgboost, lightgbm or torch (detected from the file otherwise)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow loading a .pkl/.joblib file (runs its code!) to convert it to a safe format."),
    task: str = typer.Option(None, "--task", help="image-classification for an ONNX image classifier."),
    labels: Path = typer.Option(None, "--labels", help="With --task image-classification: class names, one per line."),
    preprocess: str = typer.Option(None, "--preprocess", help="With --task image-classification: 'imagenet' or a JSON object."),
    description: str = typer.Option("", "--description"),
    features: str = typer.Option(None, "--features", help="An ONNX model with one table input (batch × n): its n column names, comma-separated (default f0..f{n-1})."),
) -> None:
    """Register an existing model file (ONNX, skops, XGBoost, LightGBM, TorchScript, or a trusted pickle)."""
    if task == "image-classification":
        require("image", "Importing an image classifier")
        from modelport.images.register import import_image_classifier

        mv = import_image_classifier(name, model_file, labels=labels, preprocess=preprocess, description=description)
    elif task is not None:
        raise ModelportError(f"Unknown --task {task!r}; the only special task is image-classification")
    else:
        from modelport.api import import_model

        names = [f.strip() for f in features.split(",")] if features is not None else None
        mv = import_model(name, model_file, framework=framework, trust_pickle=trust_pickle, description=description,
                          feature_names=names)
    success(f"Registered {mv.ref}", f" ({mv.framework}, {mv.task})")
    sig = mv.signature
    if "features" in sig and sig.get("kind") != "tabular":
        console.print(f"  /predict takes its {len(sig['features'])} features ({', '.join(sig['features'][:10])}"
                      f"{', …' if len(sig['features']) > 10 else ''}); v2: /v2/models/{mv.name}/infer")
    elif sig.get("kind") == "tensor" and mv.task != "image-classification":
        console.print(f"  /predict is not available for this model (its inputs are not one numeric [batch, n] table "
                      f"with one output); use v2: POST /v2/models/{mv.name}/infer")


@app.command("pretrained")
def pretrained_cmd(
    model: str = typer.Argument(..., help="The pretrained model to register: mobilenet-v2."),
    name: str = typer.Option(None, "--name", help="Model name in the store (default: the model's)."),
    weights: Path = typer.Option(None, "--weights", help="A local copy of the weights file (otherwise found or downloaded)."),
) -> None:
    """Export a pretrained image classifier to ONNX (needs PyTorch, only for this step) and register it."""
    if model != "mobilenet-v2":
        raise ModelportError(f"Unknown pretrained model {model!r}; available: mobilenet-v2")
    require("image", "Registering an image classifier")
    require("torch", "Exporting MobileNetV2 (only this step: serving never needs PyTorch)")
    from modelport.images.register import register_pretrained_mobilenet_v2

    with console.status("Preparing…") as status:
        mv = register_pretrained_mobilenet_v2(name or model, weights=weights,
                                              progress=lambda m: (status.update(m), progress(m)))
    success(f"Registered {mv.ref}", f" ({mv.framework}, {mv.task}). Serve it: modelport serve {mv.name}")


def _batch_options(max_batch_size: int | None, max_latency_ms: float | None):
    from modelport.serving.batching import BatchConfig

    return BatchConfig(max_batch_size=max_batch_size, max_latency_ms=max_latency_ms)


def _warmup_files(items: list[str], default: str) -> dict[str, str]:
    """``--warmup [NAME=]FILE`` items → {served name: file}; without a name, the first model's."""
    files = {}
    for item in items:
        name, sep, path = item.rpartition("=")
        files[name if sep else default] = path
    return files


@app.command()
def serve(
    refs: list[str] = typer.Argument(..., help="Models to serve: NAME, NAME:3, NAME@alias, or SERVED_NAME=REF. The first is the default for /predict."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(defaults.PORT, "--port"),
    workers: int = typer.Option(None, "--workers", help="Worker processes (default: one per core)."),
    max_batch_size: int = typer.Option(None, "--max-batch-size", min=1, help="Adaptive batching: rows per model call (1: off; default: the model's own, off for tabular models)."),
    max_latency_ms: float = typer.Option(None, "--max-latency-ms", min=0, help="Adaptive batching: how long a batch may wait to fill (default: the model's own, else 0)."),
    max_body_mb: float = typer.Option(defaults.MAX_BODY / 1024 / 1024, "--max-body-mb", help="Largest request body accepted."),
    max_images: int = typer.Option(None, "--max-images", min=1, help=f"Image models: most images in one request (default {defaults.MAX_IMAGES})."),
    max_request_pixels: int = typer.Option(None, "--max-request-pixels", min=1, help=f"Image models: most pixels one request may decode, all its images together (default {defaults.MAX_REQUEST_PIXELS})."),
    log_format: str = typer.Option("text", "--log-format", help="text or json."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
    log_db: str = typer.Option(None, "--log-db", help="Record every prediction in this database (e.g. sqlite:///predictions.db); query it with `modelport predictions`."),
    spool_dir: Path = typer.Option(None, "--spool-dir", help="With --log-db: where records wait while the database is unavailable (default: under MODELPORT_HOME)."),
    trust_proxy_headers: bool = typer.Option(False, "--trust-proxy-headers", help="Behind modelport's proxy only: record the API key id it sends in X-Modelport-Key-Id."),
    # What a client may cost: how long it may take, how much it may hold.
    header_timeout: float = typer.Option(defaults.HEADER_TIMEOUT, "--header-timeout", help="Seconds a client has to send a request's head (from connecting, or from its first byte); then 408 and close."),
    body_timeout: float = typer.Option(defaults.BODY_TIMEOUT, "--body-timeout", help="Seconds a client has to send a request's whole body once its head arrived; then 408 and close."),
    keep_alive: float = typer.Option(defaults.KEEP_ALIVE, "--keep-alive", help="Seconds an idle connection stays open between requests."),
    max_buffered_bytes: int = typer.Option(defaults.MAX_BUFFERED, "--max-buffered-bytes", min=1, help="Bytes of request bodies one worker reads at once; a request beyond it gets a 503 before its body is read."),
    warmup: list[str] = typer.Option(None, "--warmup", envvar="MODELPORT_WARMUP", help="[NAME=]FILE: a v2 inference request (JSON) for the model's warm-up prediction (default: the first model; inputs generated from its signature otherwise). Ready only once every model answered one."),
) -> None:
    """Serve models over HTTP: /predict, the Open Inference Protocol v2, /metrics, /docs."""
    from modelport.serving.limits import ImageLimits, ReadLimits
    from modelport.serving.runtime import ServeSpec
    from modelport.serving.server import serve as run_server
    from modelport.store import parse_ref

    batch = _batch_options(max_batch_size, max_latency_ms)
    images = ImageLimits(max_images=max_images, max_request_pixels=max_request_pixels)
    specs = [ServeSpec.parse(r, batch, images) for r in refs]
    run_server(specs, host=host, port=port, workers=workers, max_body=int(max_body_mb * 1024 * 1024),
               log_format=log_format, access_log=access_log, log_db=log_db, trust_proxy_headers=trust_proxy_headers,
               spool_dir=str(spool_dir) if spool_dir else None,
               limits=ReadLimits(header_timeout, body_timeout, keep_alive, max_buffered_bytes),
               warmup=_warmup_files(warmup or [], specs[0].name or parse_ref(specs[0].ref).name),
               on_ready=f"Serving {', '.join(refs)} on http://{host}:{port}  (docs: http://{host}:{port}/docs)",
               progress=progress)


@app.command()
def quickstart(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(defaults.PORT, "--port"),
    workers: int = typer.Option(None, "--workers"),
    serve_after: bool = typer.Option(True, "--serve/--no-serve", help="Serve the model after training it."),
) -> None:
    """Train a linear regression on scikit-learn's diabetes data, register it and serve it."""
    import json

    from modelport.serving.runtime import ServeSpec
    from modelport.serving.server import serve as run_server
    from modelport.training import quickstart as qs

    with console.status("Training…") as status:
        result, csv, example = qs.run(progress=lambda m: (status.update(m), progress(m)))
    success(f"Registered {result.version.ref}", "  " + "  ".join(f"{k}={v:.3f}" for k, v in result.metrics.items()))
    if not serve_after:
        console.print(f"Serve it: modelport serve {qs.NAME}")
        return
    # Printed once the server answers, so every line can be tried at once.
    body = json.dumps({"features": example})
    ready = (f"Serving {result.version.ref} on http://{host}:{port}  (Ctrl-C to stop)\n\nTry it:\n"
             f"  curl -s -X POST http://{host}:{port}/predict -H 'Content-Type: application/json' -d '{body}'\n"
             f"  curl -s http://{host}:{port}/metrics | grep modelport_requests_total\n  open http://{host}:{port}/docs\n")
    run_server([ServeSpec(result.version.ref, name=qs.NAME)], host=host, port=port, workers=workers, on_ready=ready,
               progress=progress)


@contextlib.contextmanager
def interrupt_at_once() -> Iterator[None]:
    """Ctrl-C ends the command now. Fitting runs in worker threads (n_jobs=-1) that Python cannot
    interrupt: the usual KeyboardInterrupt would wait for them to finish their trees, a minute on
    a busy machine. Exiting is safe: a version is registered in one transaction, at the end."""
    def stop(signum: int, frame: object) -> None:
        err.print("Interrupted")
        sys.stdout.flush()
        os._exit(130)

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> None:
    """The ``modelport`` command (``argv``: its arguments, default the process's): exits with its status."""
    try:
        app(args=argv)
    except ModelportError as e:
        error(str(e))
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("Interrupted")
        sys.exit(130)
    except SystemExit as e:
        if _interrupted(e):
            err.print("Interrupted")
        raise
    finally:
        if (engine := sys.modules.get("modelport.container.engine")) is not None:  # only if a command used Docker
            engine.close()


def _interrupted(e: BaseException | None) -> bool:
    """Whether Ctrl-C caused this: Typer turns a KeyboardInterrupt in a command into a silent exit 130,
    keeping the interrupt in the exception chain."""
    while e is not None:
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
    return False
