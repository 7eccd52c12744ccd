"""Defaults users see in more than one place (CLI options, the Python API, generated files), defined once.
Import-light on purpose: the CLI reads these before it knows which heavy module a command needs."""

from __future__ import annotations

BASE_IMAGE = "python:3.11-slim"  # the FROM of every image modelport builds
PROXY_IMAGE = "haproxy:2.6"  # what a service's gateway image is built on
DB_IMAGE = "postgres:16"  # a stack's prediction log
PORT = 8080  # where serve, run's gateway and a stack's listen (inside a container: always this)
HEALTHY_WAIT = 180.0  # seconds for a service or replica to become healthy (run, deploy, scale, rollback, restart)
STACK_WAIT = 300.0  # seconds for a whole stack's first start (its database and every model service)
