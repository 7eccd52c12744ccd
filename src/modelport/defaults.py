"""Defaults users see in more than one place (CLI options, the Python API, generated files), defined once.
Import-light on purpose: the CLI reads these before it knows which heavy module a command needs."""

from __future__ import annotations

BASE_IMAGE = "python:3.11-slim"  # the FROM of every image modelport builds
PROXY_IMAGE = "haproxy:2.6"  # what a service's gateway image is built on
DB_IMAGE = "postgres:16"  # a stack's prediction log
