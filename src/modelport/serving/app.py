"""The inference server's ASGI app: simple JSON API, Open Inference Protocol v2, health, metrics, docs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from modelport import __version__
from modelport.errors import ModelportError
from modelport.serving import openapi, predict_router, repository, swagger, v2
from modelport.serving.http import DEFAULT_MAX_BODY, HTTPError, json_response, on_error
from modelport.serving.limits import DEFAULT_MAX_BUFFERED, BodyBudget
from modelport.serving.metrics import MetricsFlusher
from modelport.serving.runtime import ModelSet, describe

log = logging.getLogger("modelport.server")


def create_app(models: ModelSet, *, max_body: int = DEFAULT_MAX_BODY, max_buffered: int = DEFAULT_MAX_BUFFERED,
               log_db: str | None = None, spool_dir: str | None = None, trust_proxy_headers: bool = False,
               repository_state: str | None = None) -> ASGIApp:
    """The model server: one route table, its prediction routes raw ASGI endpoints dispatched ahead of
    the middleware (``predict_router.FastRoutes``). ``max_buffered``: bytes of request bodies this app (one per worker) reads at once.
    ``repository_state``: a directory the worker processes share for which models are unloaded."""
    if repository_state is not None:
        models.availability = repository.Availability(Path(repository_state))
    budget = BodyBudget(max_buffered)
    spec = openapi.build_spec(models)
    flusher = MetricsFlusher([m.metrics for m in models])
    prediction_log = None
    if log_db:
        from modelport.predlog import open_log

        prediction_log = open_log(log_db, Path(spool_dir) if spool_dir else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(flusher.run())
        yield
        task.cancel()
        flusher.flush()
        if prediction_log is not None:  # a normal stop writes every queued record (or spools it)
            await asyncio.to_thread(prediction_log.close)
        models.close()

    async def index(request: Request) -> Response:
        return json_response({"name": "modelport", "version": __version__, "models": describe(models),
                              "docs": "/docs", "metrics": "/metrics", "predict": "/predict"})

    async def list_models(request: Request) -> Response:
        return json_response({"models": describe(models)})

    async def health(request: Request) -> Response:
        return json_response({"status": "ok", "models": len(list(models))})

    async def v2_server(request: Request) -> Response:
        return json_response({"name": "modelport", "version": __version__, "extensions": ["binary_tensor_data", "model_repository"]})

    # The protocol's bodies (KServe's client parses them; Triton's only looks at the status).
    async def v2_live(request: Request) -> Response:
        return json_response({"live": True})

    async def v2_ready(request: Request) -> Response:
        return json_response({"ready": True})  # reached once every model has loaded and warmed up (startup.Starting)

    async def v2_model(request: Request) -> Response:
        return json_response(v2.model_metadata(models.get(request.path_params["name"], request.path_params.get("version"))))

    async def v2_model_ready(request: Request) -> Response:
        model = models.get(request.path_params["name"], request.path_params.get("version"))
        if not models.availability.is_loaded(model.name):  # the protocol: a 4xx status says "not ready"
            return json_response({"name": model.name, "ready": False, "error": repository.unloaded_message(model.name)}, 400)
        return json_response({"name": model.name, "ready": True})

    async def repository_index(request: Request) -> Response:
        return await repository.index(models, request, budget)

    async def repository_load(request: Request) -> Response:
        return await repository.load(models, request, budget)

    async def repository_unload(request: Request) -> Response:
        return await repository.unload(models, request, budget)

    async def metrics_route(request: Request) -> Response:
        body, content_type = flusher.render()
        return Response(body, media_type=content_type)

    async def openapi_route(request: Request) -> Response:
        return json_response(spec)

    swagger_ui = swagger.swagger_ui_dir()

    async def docs(request: Request) -> Response:
        return HTMLResponse(swagger.docs_html() if swagger_ui else swagger.docs_missing_html())

    predictions = predict_router.routes(models, max_body, budget, prediction_log.submit if prediction_log else None,
                                        trust_proxy_headers)
    routes = [
        *predictions,
        Route("/", index, methods=["GET"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v2", v2_server, methods=["GET"]),
        Route("/v2/", v2_server, methods=["GET"]),
        Route("/v2/health/live", v2_live, methods=["GET"]),
        Route("/v2/health/ready", v2_ready, methods=["GET"]),
        Route("/v2/models/{name}", v2_model, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", v2_model, methods=["GET"]),
        Route("/v2/models/{name}/ready", v2_model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", v2_model_ready, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", repository_load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", repository_unload, methods=["POST"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/openapi.json", openapi_route, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        *([Mount("/docs/static", StaticFiles(directory=swagger_ui))] if swagger_ui else []),
    ]

    async def on_starlette_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        message = {404: f"No such endpoint: {request.method} {request.url.path}",
                   405: f"Method {request.method} is not allowed on {request.url.path}; use {headers.get('Allow')}",
                   }.get(exc.status_code, str(exc.detail))
        return await on_error(request, HTTPError(exc.status_code, message, headers))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return await on_error(request, exc)

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        HTTPError: on_error, ModelportError: on_error, HTTPException: on_starlette_error, Exception: on_unexpected})
    return predict_router.FastRoutes(predictions, app)
