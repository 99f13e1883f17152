"""What ``hasher serve`` exposes at ``/metrics`` (Prometheus text format, ``prometheus_client``).

Every series lives in the server's own registry (two apps in one process never share counters):

- ``hasher_serve_requests_total{endpoint}`` and ``hasher_serve_errors_total{endpoint,status}``:
  every answered request, and those answered with a 4xx/5xx status (or ended by an error mid-stream);
- ``hasher_serve_request_duration_seconds{endpoint}``: a histogram of whole-request latency (a
  streamed answer counts until its last byte);
- ``hasher_serve_token_latency_seconds``: a histogram of the time from one streamed token to the
  next (the first: from the request's start);
- ``hasher_serve_tokens_total{kind,bundle}``: generated tokens, ``kind`` = ``exact`` (a deployed
  context matched) or ``guessed`` (the nearest frame), per bundle version;
  ``hasher_serve_abstentions_total{bundle}``: answers where the model abstained;
- ``hasher_serve_in_flight_requests``: generation requests running now;
  ``hasher_serve_inference_queue``: steps waiting for (or on) the inference thread;
- ``hasher_serve_bundle_info{bundle}``: 1 for the bundle being served;
  ``hasher_serve_bundle_loads_total{result}``: hot swaps ``loaded`` and ``refused``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

#: Seconds: from a millisecond step on a small deployment to a queue of many clients.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServeMetrics:
    """The server's Prometheus series (see the module doc for each)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("hasher_serve_requests", "Requests answered", ["endpoint"], registry=r)
        self.errors = Counter(
            "hasher_serve_errors", "Requests answered with an error", ["endpoint", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "hasher_serve_request_duration_seconds",
            "Whole-request latency (streams until their last byte)",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.token_seconds = Histogram(
            "hasher_serve_token_latency_seconds",
            "Time from one streamed token to the next (the first: from the request's start)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "hasher_serve_tokens",
            "Generated tokens: exact context or nearest-frame guess",
            ["kind", "bundle"],
            registry=r,
        )
        self.abstentions = Counter(
            "hasher_serve_abstentions", "Answers where the model abstained", ["bundle"], registry=r
        )
        self.in_flight = Gauge("hasher_serve_in_flight_requests", "Generation requests running", registry=r)
        self.queue = Gauge(
            "hasher_serve_inference_queue", "Steps queued for the inference thread", registry=r
        )
        if queue_depth is not None:
            self.queue.set_function(queue_depth)
        self.bundle = Gauge(
            "hasher_serve_bundle_info", "1 for the bundle being served", ["bundle"], registry=r
        )
        self.loads = Counter(
            "hasher_serve_bundle_loads", "Bundles loaded or refused by the hot swap", ["result"], registry=r
        )
        self._served: str | None = None

    def bundle_changed(self, event: str, version: str, reason: str | None) -> None:
        """A hot-swap outcome (``loaded`` or ``refused``); ``loaded`` moves the bundle label."""
        self.loads.labels(event).inc()
        if event == "loaded":
            if self._served is not None and self._served != version:
                self.bundle.remove(self._served)
            self.bundle.labels(version).set(1)
            self._served = version

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
