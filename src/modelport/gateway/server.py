"""Running the gateway: the public app and the loopback admin API in one process (one route table)."""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn

from modelport import defaults
from modelport.gateway.admin import DEFAULT_ADMIN_PORT, create_admin_app
from modelport.gateway.proxy import GatewayHooks, RouteTable, Upstream, create_gateway_app
from modelport.serving.limits import ReadLimits
from modelport.serving.logs import log_config
from modelport.serving.protocol import uvicorn_options


class _AdminServer(uvicorn.Server):
    def capture_signals(self):  # the public server owns SIGTERM/SIGINT and stops this one
        return contextlib.nullcontext()


def run_gateway(upstreams: list[Upstream], *, host: str = "127.0.0.1", port: int = defaults.PORT, default: str | None = None,
                admin_port: int = DEFAULT_ADMIN_PORT, hooks: GatewayHooks | None = None, log_format: str = "text",
                limits: ReadLimits = ReadLimits()) -> None:
    routes = RouteTable(upstreams)
    logging_config = log_config(log_format, "info")
    public = uvicorn.Server(uvicorn.Config(
        create_gateway_app(routes, default=default or (upstreams[0].name if upstreams else None), hooks=hooks,
                           max_buffered=limits.max_buffered),
        host=host, port=port, loop="uvloop", access_log=False, log_config=logging_config,
        server_header=False, timeout_graceful_shutdown=10, **uvicorn_options(limits)))
    admin = _AdminServer(uvicorn.Config(create_admin_app(routes), host="127.0.0.1", port=admin_port, loop="uvloop",
                                        access_log=False, log_config=logging_config))

    async def main() -> None:
        admin_task = asyncio.create_task(admin.serve())
        try:
            await public.serve()
        finally:
            admin.should_exit = True
            await admin_task

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
