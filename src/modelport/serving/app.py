"""The inference server's ASGI app: simple JSON API, Open Inference Protocol v2, health, metrics, docs."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from modelport import __version__
from modelport.serving import metrics, openapi, v2
from modelport.serving.http import DEFAULT_MAX_BODY, HTTPError, error_response, json_response, parse_json, read_body
from modelport.serving.runtime import ModelSet, ServedModel, describe

log = logging.getLogger("modelport.server")

Handler = Callable[[ServedModel, Request], Awaitable[Response]]


def create_app(models: ModelSet, *, max_body: int = DEFAULT_MAX_BODY) -> Starlette:
    spec = openapi.build_spec(models)

    async def measured(model: ServedModel, protocol: str, request: Request, handler: Handler) -> Response:
        """Run a prediction handler with metrics, turning every failure into a JSON error."""
        start = time.perf_counter()
        model.metrics.in_flight.inc()
        try:
            response = await handler(model, request)
        except HTTPError as e:
            if e.status >= 500:
                log.error("prediction failed", extra={"model": model.name, "version": model.version, "error": e.message})
            response = error_response(e.status, e.message, {**model.headers, **(e.headers or {})})
        finally:
            model.metrics.in_flight.dec()
        model.metrics.observe(protocol, response.status_code, time.perf_counter() - start)
        return response

    async def simple_predict(model: ServedModel, request: Request) -> Response:
        if model.task == "image-classification":
            from modelport.serving import images

            return await images.predict(model, request, max_body)
        if model.schema is None:
            raise HTTPError(400, f"Model {model.name!r} takes named tensors: use POST /v2/models/{model.name}/infer")
        payload = parse_json(await read_body(request, max_body))
        x, single = model.schema.parse(payload)
        model.schema.check_finite(x)
        y = (await model.predict(x)).tolist()
        out: dict = {"prediction": y[0]} if single else {"predictions": y}
        if isinstance(payload, dict) and payload.get("probabilities") is True:
            if model.schema.classes is None:
                raise HTTPError(400, f"Model {model.name!r} is a {model.task} model: it has no class probabilities")
            probs = model.schema.probabilities(await model.predict_proba(x))
            out["probabilities"] = probs[0] if single else probs
        return json_response(out, headers=model.headers)

    async def v2_infer(model: ServedModel, request: Request) -> Response:
        return await v2.infer(model, request, await read_body(request, max_body))

    async def predict_default(request: Request) -> Response:
        return await measured(models.default, "simple", request, simple_predict)

    async def predict_named(request: Request) -> Response:
        return await measured(models.get(request.path_params["name"]), "simple", request, simple_predict)

    async def infer_route(request: Request) -> Response:
        model = models.get(request.path_params["name"], request.path_params.get("version"))
        return await measured(model, "v2", request, v2_infer)

    async def index(request: Request) -> Response:
        return json_response({"name": "modelport", "version": __version__, "models": describe(models),
                              "docs": "/docs", "metrics": "/metrics", "predict": "/predict"})

    async def list_models(request: Request) -> Response:
        return json_response({"models": describe(models)})

    async def health(request: Request) -> Response:
        return json_response({"status": "ok", "models": len(list(models))})

    async def v2_server(request: Request) -> Response:
        return json_response({"name": "modelport", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def v2_ok(request: Request) -> Response:
        return Response(status_code=200)  # Triton answers an empty 200

    async def v2_model(request: Request) -> Response:
        return json_response(v2.model_metadata(models.get(request.path_params["name"], request.path_params.get("version"))))

    async def v2_model_ready(request: Request) -> Response:
        models.get(request.path_params["name"], request.path_params.get("version"))
        return Response(status_code=200)

    async def metrics_route(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def openapi_route(request: Request) -> Response:
        return json_response(spec)

    async def docs(request: Request) -> Response:
        return HTMLResponse(openapi.docs_html())

    routes = [
        Route("/predict", predict_default, methods=["POST"]),
        Route("/models/{name}/predict", predict_named, methods=["POST"]),
        Route("/v2/models/{name}/infer", infer_route, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer_route, methods=["POST"]),
        Route("/", index, methods=["GET"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v2", v2_server, methods=["GET"]),
        Route("/v2/health/live", v2_ok, methods=["GET"]),
        Route("/v2/health/ready", v2_ok, methods=["GET"]),
        Route("/v2/models/{name}", v2_model, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", v2_model, methods=["GET"]),
        Route("/v2/models/{name}/ready", v2_model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", v2_model_ready, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/openapi.json", openapi_route, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Mount("/docs/static", StaticFiles(directory=openapi.swagger_ui_dir())),
    ]

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPError)
        return error_response(exc.status, exc.message, exc.headers)

    async def on_starlette_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: f"No such endpoint: {request.method} {request.url.path}",
                   405: f"Method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message, dict(exc.headers or {}))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"Internal server error ({type(exc).__name__}); see the server log")

    return Starlette(routes=routes, exception_handlers={HTTPError: on_http_error, HTTPException: on_starlette_error,
                                                        Exception: on_unexpected})
