"""An HTTP reverse proxy for model services whose routes can be switched while it serves.

Each request goes to whichever upstream its route names *now*, so switching a route moves new
requests at once while requests already on the old upstream finish there (tracked per upstream,
so the caller can wait for the old one to drain before stopping it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelport.errors import ModelportError
from modelport.gateway.paths import PathGuard
from modelport.gateway.upstream import UpstreamClient, UpstreamReply, UpstreamTimeout, UpstreamUnavailable
from modelport.predlog.record import PredictionRecord
from modelport.serving.http import (
    DEFAULT_MAX_BODY,
    REQUEST_ID_FORMAT,
    ClientGone,
    HTTPError,
    error_response,
    json_response,
    on_error,
    read_body,
)
from modelport.serving.limits import DEFAULT_MAX_BUFFERED, BodyBudget

# Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus ones httpx sets itself.
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                         "transfer-encoding", "upgrade", "host", "content-length"})
REQUEST_ID = "x-request-id"
KEY_ID = "x-modelport-key-id"
# Headers only the gateway may set for the model server: a client's own copies are dropped.
OWN_HEADERS = frozenset({REQUEST_ID, KEY_ID})


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Upstream:
        """``NAME=http://host:port`` or ``NAME=http://host:port@VERSION`` (the gateway's --route)."""
        name, sep, rest = text.partition("=")
        if not sep or not name or not rest.startswith(("http://", "https://")):
            raise ModelportError(f"Invalid route {text!r} (--route): expected NAME=http://host:port[@VERSION]")
        url, _, version = rest.partition("@")
        return cls(name, url.rstrip("/"), version or None)


class GatewayHooks(Protocol):
    async def authenticate(self, request: Request) -> str | None: ...
    async def on_prediction(self, record: PredictionRecord) -> None: ...


class RouteTable:
    def __init__(self, upstreams: list[Upstream] | None = None) -> None:
        self._routes: dict[str, Upstream] = {u.name: u for u in upstreams or []}
        self._in_flight: Counter[str] = Counter()

    def set(self, name: str, url: str, version: str | None = None) -> Upstream | None:
        previous = self._routes.get(name)
        self._routes[name] = Upstream(name, url.rstrip("/"), version)
        return previous

    def get(self, name: str) -> Upstream:
        upstream = self._routes.get(name)
        if upstream is None:
            raise HTTPError(404, f"Model {name!r} is not served here (served: {', '.join(self._routes) or 'none'})")
        return upstream

    def names(self) -> list[str]:
        return list(self._routes)

    def in_flight(self, url: str) -> int:
        return self._in_flight[url]

    def acquire(self, upstream: Upstream) -> None:
        self._in_flight[upstream.url] += 1

    def release(self, upstream: Upstream) -> None:
        self._in_flight[upstream.url] -= 1

    async def drain(self, url: str, timeout: float) -> bool:
        """Wait until no request is in flight to ``url`` (False if ``timeout`` passed first)."""
        deadline = time.monotonic() + timeout
        while self._in_flight[url] > 0:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def snapshot(self) -> list[dict[str, object]]:
        return [{"name": u.name, "url": u.url, "version": u.version, "in_flight": self._in_flight[u.url]}
                for u in self._routes.values()]


def create_gateway_app(routes: RouteTable, *, default: str | None, hooks: GatewayHooks | None = None,
                       timeout: float = 60.0, max_body: int = DEFAULT_MAX_BODY,
                       max_buffered: int = DEFAULT_MAX_BUFFERED) -> Starlette:
    client = UpstreamClient(timeout)
    budget = BodyBudget(max_buffered)  # bytes of request bodies being read in this process

    async def forward(name: str, request: Request, *, prediction: bool, public: bool = False) -> Response:
        start = time.perf_counter()
        # Every route but the public ones needs a key (when keys are required); predictions are also logged.
        key_id = await hooks.authenticate(request) if hooks is not None and not public else None
        request_id = _request_id(request)
        body = await read_body(request.scope, request.receive, max_body, budget, decompress=False) if request.method == "POST" else b""
        headers = [(k, v) for k, v in request.headers.items() if k not in HOP_HEADERS and k not in OWN_HEADERS]
        headers.append((REQUEST_ID, request_id))
        if key_id is not None:
            headers.append((KEY_ID, key_id))

        async def log(version: str | None, outputs: bytes, status: int) -> None:
            if hooks is not None and prediction:
                await hooks.on_prediction(PredictionRecord(
                    time=datetime.now(UTC), request_id=request_id, key_id=key_id, model=name, version=version,
                    inputs=body, outputs=outputs, content_type=request.headers.get("content-type", ""),
                    latency_ms=(time.perf_counter() - start) * 1000, status=status))

        try:
            upstream, upstream_response = await _send(name, request, body, headers)
        except HTTPError as e:
            # The model service did not answer (503/504): still a prediction asked for and not
            # given, so the log's error rate and the client's request id both show it.
            if e.status in (503, 504):
                await log(routes.get(name).version, orjson.dumps({"error": e.message}), e.status)
                e.headers = {**(e.headers or {}), REQUEST_ID: request_id}
            raise
        # date/server: this server sets its own
        out_headers = {k: v for k, v in upstream_response.headers.items() if k not in HOP_HEADERS and k not in ("date", "server")}
        out_headers[REQUEST_ID] = request_id
        await log(upstream_response.headers.get("x-model-version", upstream.version), upstream_response.content,
                  upstream_response.status_code)
        return Response(upstream_response.content, upstream_response.status_code, out_headers)

    async def _send(name: str, request: Request, body: bytes, headers: list[tuple[str, str]]) -> tuple[Upstream, UpstreamReply]:
        # The path exactly as received: PathGuard has refused every path that decoding once more
        # (as the model server will) could change, so both sides read the same route.
        raw_path = (request.scope.get("raw_path") or request.scope["path"].encode()).split(b"?", 1)[0].decode("latin-1")
        query = request.scope.get("query_string", b"").decode("latin-1")
        # Two tries: a connection refused or dropped before an answer (a service restarting, a
        # route switched a moment ago) is retried once against the route's current upstream.
        for attempt in (1, 2):
            upstream = routes.get(name)
            routes.acquire(upstream)
            url = upstream.url + raw_path + (f"?{query}" if query else "")
            try:
                return upstream, await client.request(request.method, url, body, headers)
            except UpstreamTimeout:
                raise HTTPError(504, f"Model service {name!r} did not answer within {timeout:.0f}s") from None
            except UpstreamUnavailable as e:
                if attempt == 2:
                    raise HTTPError(503, f"Model service {name!r} is unavailable ({e}); "
                                         "it may be restarting, try again shortly", {"retry-after": "1"}) from None
                await asyncio.sleep(0.05)
            finally:
                routes.release(upstream)
        raise AssertionError("unreachable")

    def default_name() -> str:
        if default is None:
            raise HTTPError(404, "No default model: use /models/{name}/predict")
        return default

    async def to_default(request: Request) -> Response:
        return await forward(default_name(), request, prediction=request.method == "POST")

    async def to_named(request: Request) -> Response:
        return await forward(request.path_params["name"], request, prediction=request.method == "POST")

    async def public(request: Request) -> Response:
        # The API's own description: readable without a key, so clients can be written against it.
        return await forward(default_name(), request, prediction=False, public=True)

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        """Ready when every model service is: the container's healthcheck follows its upstreams."""
        async def check(u: Upstream) -> bool:
            return await client.status(u.url + "/v2/health/ready", timeout=2) == 200

        results = await asyncio.gather(*(check(routes.get(n)) for n in routes.names()))
        down = [n for n, ok in zip(routes.names(), results, strict=True) if not ok]
        if down:
            return error_response(503, f"Model service(s) not ready: {', '.join(down)}")
        return json_response({"ready": True})

    async def gateway_routes(request: Request) -> Response:
        if hooks is not None:
            await hooks.authenticate(request)
        # Names and versions only: the model services' internal addresses stay inside.
        return json_response({"routes": [{k: v for k, v in r.items() if k != "url"} for r in routes.snapshot()],
                              "default": default})

    async def on_client_gone(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # never sent: the connection is gone

    # Every path the gateway answers is listed here; anything else is a 404 that reaches no model.
    app = Starlette(
        routes=[
            Route("/predict", to_default, methods=["POST"]),
            Route("/models/{name}/predict", to_named, methods=["POST"]),
            Route("/v2/models/{name}/infer", to_named, methods=["POST"]),
            Route("/v2/models/{name}/versions/{version}/infer", to_named, methods=["POST"]),
            Route("/v2/health/live", live, methods=["GET"]),
            Route("/v2/health/ready", ready, methods=["GET"]),
            Route("/v2/models/{name}", to_named, methods=["GET"]),
            Route("/v2/models/{name}/ready", to_named, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}", to_named, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}/ready", to_named, methods=["GET"]),
            Route("/v2", to_default, methods=["GET"]),
            Route("/models", to_default, methods=["GET"]),
            Route("/health", to_default, methods=["GET"]),
            Route("/metrics", to_default, methods=["GET"]),
            Route("/", public, methods=["GET"]),
            Route("/openapi.json", public, methods=["GET"]),
            Route("/docs", public, methods=["GET"]),
            Route("/docs/static/{file:path}", public, methods=["GET"]),
            Route("/gateway/routes", gateway_routes, methods=["GET"]),
        ],
        middleware=[Middleware(PathGuard)],
        exception_handlers={HTTPError: on_error, ClientGone: on_client_gone},
        lifespan=lambda app: _closing(client),
    )
    return app


def _request_id(request: Request) -> str:
    given = request.headers.get(REQUEST_ID)
    return given if given is not None and REQUEST_ID_FORMAT.fullmatch(given) else uuid.uuid4().hex


@contextlib.asynccontextmanager
async def _closing(client: UpstreamClient) -> AsyncIterator[None]:
    yield
    await client.close()
