"""The gateway's admin API (loopback only, inside its container) and the client that calls it."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelport.errors import ModelportError
from modelport.gateway.proxy import RouteTable
from modelport.serving.http import HTTPError, json_response, on_error, parse_json

DEFAULT_ADMIN_PORT = 8081


def create_admin_app(routes: RouteTable) -> Starlette:
    async def list_routes(request: Request) -> Response:
        return json_response({"routes": routes.snapshot()})

    async def set_route(request: Request) -> Response:
        """Switch a route, then wait (bounded) for requests still on the old upstream to finish."""
        body = parse_json(await request.body())
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            raise HTTPError(400, 'Expected {"url": "http://host:port", "version": "2"}')
        name = request.path_params["name"]
        previous = routes.set(name, body["url"], body.get("version"))
        drained = True
        if previous is not None and previous.url != body["url"].rstrip("/"):
            drained = await routes.drain(previous.url, float(body.get("drain_timeout", 30)))
        return json_response({"route": routes.get(name).__dict__, "previous": previous.__dict__ if previous else None,
                              "drained": drained})

    return Starlette(routes=[Route("/routes", list_routes, methods=["GET"]),
                             Route("/routes/{name}", set_route, methods=["PUT"])],
                     exception_handlers={HTTPError: on_error, ModelportError: on_error})


def set_route(name: str, url: str, version: str | None = None, *, port: int = DEFAULT_ADMIN_PORT,
              drain_timeout: float = 30) -> dict:
    try:
        r = httpx.put(f"http://127.0.0.1:{port}/routes/{name}", timeout=drain_timeout + 10,
                      json={"url": url, "version": version, "drain_timeout": drain_timeout})
    except httpx.HTTPError as e:
        raise ModelportError(f"Cannot reach the gateway's admin API on port {port}: {e}") from None
    if r.status_code != 200:
        raise ModelportError(f"The gateway refused the route change: {r.text}")
    return r.json()
