"""Prometheus metrics, counted in-process and flushed to prometheus-client every second.

Updating prometheus-client's values costs a lock and, with several workers, an mmap write each
(eight per request here); counting in plain Python and flushing deltas keeps that off the request
path. Scrapes flush first, so a worker's own numbers are current; other workers' are at most a
second old. With several workers prometheus-client's multiprocess mode sums them.
"""

from __future__ import annotations

import asyncio
import bisect
import os
from collections import defaultdict

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as mp

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FLUSH_INTERVAL_S = 1.0

REQUESTS = Counter("modelport_requests_total", "Prediction requests answered", ["model", "version", "protocol", "code"])
ERRORS = Counter("modelport_request_errors_total", "Prediction requests that ended in an error", ["model", "version", "protocol", "code"])
LATENCY = Histogram("modelport_request_duration_seconds", "Time to answer a prediction request",
                    ["model", "version", "protocol"], buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("modelport_requests_in_flight", "Prediction requests being answered", ["model", "version"],
                  multiprocess_mode="livesum")
BATCH_SIZE = Histogram("modelport_batch_size", "Rows per model call (adaptive batching)", ["model", "version"],
                       buckets=BATCH_BUCKETS)
ROWS = Counter("modelport_predicted_rows_total", "Rows (or images) predicted", ["model", "version"])


class LocalHistogram:
    """Bucket counts and a sum, added to a prometheus-client histogram child on flush."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def flush_into(self, child: Histogram) -> None:
        # prometheus-client keeps one value per bucket (not cumulative) and a sum: add ours to them.
        for i, n in enumerate(self.counts):
            if n:
                child._buckets[i].inc(n)  # noqa: SLF001 (no public bulk-observe API; version pinned)
        if self.total:
            child._sum.inc(self.total)  # noqa: SLF001
        self.counts = [0] * len(self.counts)
        self.total = 0.0


def shared_across_workers() -> None:
    """In a worker forked from a server that imported prometheus-client before it set
    PROMETHEUS_MULTIPROC_DIR: the values of the metrics made from now on go to that directory's files
    (prometheus-client picks its value class once, at import). No labelled child exists before the fork."""
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


class ModelMetrics:
    """Everything counted for one served model and version."""

    def __init__(self, model: str, version: str) -> None:
        self.model, self.version = model, version
        self.in_flight = 0
        self.rows = 0
        self.batch_sizes = LocalHistogram(BATCH_BUCKETS)
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, LocalHistogram] = {}
        self._in_flight_gauge = IN_FLIGHT.labels(model, version)

    def add_rows(self, n: int) -> None:
        self.rows += n

    def observe_batch(self, size: int) -> None:
        self.batch_sizes.observe(size)

    def discard(self) -> None:
        """Forget the rows and batches counted so far (a warm-up prediction's, which no client asked for)."""
        self.rows = 0
        self.batch_sizes = LocalHistogram(BATCH_BUCKETS)

    def observe(self, protocol: str, code: int, seconds: float) -> None:
        self.requests[(protocol, code)] += 1
        latency = self.latency.get(protocol)
        if latency is None:
            latency = self.latency[protocol] = LocalHistogram(LATENCY_BUCKETS)
        latency.observe(seconds)

    def flush(self) -> None:
        m, v = self.model, self.version
        for (protocol, code), n in self.requests.items():
            REQUESTS.labels(m, v, protocol, str(code)).inc(n)
            if code >= 400:
                ERRORS.labels(m, v, protocol, str(code)).inc(n)
        self.requests.clear()
        for protocol, hist in self.latency.items():
            hist.flush_into(LATENCY.labels(m, v, protocol))
        self.batch_sizes.flush_into(BATCH_SIZE.labels(m, v))
        if self.rows:
            ROWS.labels(m, v).inc(self.rows)
            self.rows = 0
        self._in_flight_gauge.set(self.in_flight)


class MetricsFlusher:
    """Flushes every model's metrics on a timer while the server runs."""

    def __init__(self, metrics: list[ModelMetrics]) -> None:
        self.metrics = metrics

    def flush(self) -> None:
        for m in self.metrics:
            m.flush()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            self.flush()

    def render(self) -> tuple[bytes, str]:
        self.flush()
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            mp.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(), CONTENT_TYPE_LATEST
