"""The server's Prometheus metrics (``GET /metrics``, text format, via ``prometheus_client``).

Each app has its own registry. With ``--workers N`` the supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start: each worker then writes its values
to files there, and ``/metrics``, whichever worker answers it, sums every worker's.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

disable_created_metrics()  # the *_created series: noise for a server's counters

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self._children = {}  # (route, code) -> the labelled request counter and latency histogram
        r = self.registry
        self.requests = Counter(
            "ottotrain_requests",
            "HTTP requests answered, by route and status code",
            ["route", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "ottotrain_request_seconds",
            "Seconds from a request's start to its answer, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rows = Counter("ottotrain_rows", "Rows predicted", registry=r)
        self.request_rows = Histogram(
            "ottotrain_request_rows", "Rows per predict request", buckets=ROW_BUCKETS, registry=r
        )
        self.batch_rows = Histogram(
            "ottotrain_batch_rows",
            "Rows per model call (requests batched together)",
            buckets=ROW_BUCKETS,
            registry=r,
        )

    def observe(self, route: str, code: int, seconds: float):
        children = self._children.get((route, code))
        if children is None:  # a bounded set: routes are labelled by kind, codes are few
            children = self._children[route, code] = (
                self.requests.labels(route, str(code)),
                self.latency.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """(the text every worker's metrics make together, its content type)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
