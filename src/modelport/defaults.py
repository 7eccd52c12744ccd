"""Defaults users see in more than one place (CLI options, the Python API, generated files), defined once.
Import-light on purpose: the CLI reads these before it knows which heavy module a command needs."""

from __future__ import annotations

BASE_IMAGE = "python:3.11-slim"  # the FROM of every image modelport builds
PROXY_IMAGE = "haproxy:2.6"  # what a service's gateway image is built on
DB_IMAGE = "postgres:16"  # a stack's prediction log
PORT = 8080  # where serve, run's gateway and a stack's listen (inside a container: always this)
HEALTHY_WAIT = 180.0  # seconds for a service or replica to become healthy (run, deploy, scale, rollback, restart)
STACK_WAIT = 300.0  # seconds for a whole stack's first start (its database and every model service)

# What one client or request may cost a model server (serve's options; serving.limits, serving.http)
MAX_BODY = 16 * 1024 * 1024  # bytes of one request body (serve --max-body-mb 16)
HEADER_TIMEOUT = 10.0  # seconds from connecting (or a request's first byte) to its complete head
BODY_TIMEOUT = 60.0  # seconds from the complete head to the complete body
KEEP_ALIVE = 5.0  # seconds an idle connection stays open between requests
MAX_BUFFERED = 256 * 1024 * 1024  # bytes of request bodies one worker reads at once
# 64 images are 8 model calls at the default batch size, and their preprocessed tensors take 38 MB for
# a 224x224 model. 100M decoded pixels take about a second of one core to decode as PNG.
MAX_IMAGES = 64
MAX_REQUEST_PIXELS = 100_000_000
