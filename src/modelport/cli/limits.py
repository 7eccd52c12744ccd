"""The options of ``serve`` that limit clients: how long a client may take, how much it may hold."""

from __future__ import annotations

import typer

from modelport.serving.limits import DEFAULT_MAX_BUFFERED, ReadLimits

_DEFAULTS = ReadLimits()
HEADER_TIMEOUT = typer.Option(_DEFAULTS.header_timeout, "--header-timeout", help="Seconds a client has to send a request's head (from connecting, or from its first byte); then 408 and close.")
BODY_TIMEOUT = typer.Option(_DEFAULTS.body_timeout, "--body-timeout", help="Seconds a client has to send a request's whole body once its head arrived; then 408 and close.")
KEEP_ALIVE = typer.Option(_DEFAULTS.keep_alive, "--keep-alive", help="Seconds an idle connection stays open between requests.")
MAX_BUFFERED_BYTES = typer.Option(DEFAULT_MAX_BUFFERED, "--max-buffered-bytes", min=1, help="Bytes of request bodies one worker reads at once; a request beyond it gets a 503 before its body is read.")
