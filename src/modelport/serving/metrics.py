"""Prometheus metrics. With several workers, prometheus-client's multiprocess mode sums them."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as mp

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REQUESTS = Counter("modelport_requests_total", "Prediction requests answered", ["model", "version", "protocol", "code"])
ERRORS = Counter("modelport_request_errors_total", "Prediction requests that ended in an error", ["model", "version", "protocol", "code"])
LATENCY = Histogram("modelport_request_duration_seconds", "Time to answer a prediction request",
                    ["model", "version", "protocol"], buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("modelport_requests_in_flight", "Prediction requests being answered", ["model", "version"],
                  multiprocess_mode="livesum")
BATCH_SIZE = Histogram("modelport_batch_size", "Rows per model call (adaptive batching)", ["model", "version"],
                       buckets=BATCH_BUCKETS)
ROWS = Counter("modelport_predicted_rows_total", "Rows (or images) predicted", ["model", "version"])


def render() -> tuple[bytes, str]:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


class ModelMetrics:
    """The label-bound children for one served model, bound once instead of per request."""

    def __init__(self, model: str, version: str) -> None:
        self.in_flight = IN_FLIGHT.labels(model, version)
        self.batch_size = BATCH_SIZE.labels(model, version)
        self.rows = ROWS.labels(model, version)
        self._model, self._version = model, version
        self._latency: dict[str, Histogram] = {}
        self._requests: dict[tuple[str, int], Counter] = {}

    def observe(self, protocol: str, code: int, seconds: float) -> None:
        latency = self._latency.get(protocol)
        if latency is None:
            latency = self._latency[protocol] = LATENCY.labels(self._model, self._version, protocol)
        latency.observe(seconds)
        counter = self._requests.get((protocol, code))
        if counter is None:
            counter = self._requests[(protocol, code)] = REQUESTS.labels(self._model, self._version, protocol, str(code))
        counter.inc()
        if code >= 400:
            ERRORS.labels(self._model, self._version, protocol, str(code)).inc()
