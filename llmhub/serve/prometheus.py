"""Prometheus metrics of the server, in their own registry (one app per process, tests stay clean).

GET /metrics exposes: requests by endpoint and status code, end-to-end request latency, the size and
duration of every model batch, the time requests waited in the queue, the queue depth, and the
tokens read and generated (for cost per token from the server's side), and the choices whose client
left before they were done (their rows stop at the next decoding step).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latency buckets in seconds: sub-second answers of tiny models up to minute-long overload queues.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llmhub_requests", "HTTP requests answered", ["endpoint", "code"], registry=r)
        self.latency = Histogram("llmhub_request_latency_seconds", "time from request to answer",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("llmhub_batch_size", "requests per model forward pass (batch)",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("llmhub_batch_seconds", "model time per batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("llmhub_queue_wait_seconds", "time a request waited for its batch",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("llmhub_queue_depth", "requests waiting for a batch", registry=r)
        self.input_tokens = Counter("llmhub_input_tokens", "prompt tokens of answered requests", registry=r)
        self.output_tokens = Counter("llmhub_output_tokens", "generated tokens of answered requests", registry=r)
        self.cancelled = Counter("llmhub_cancelled_choices", "choices stopped mid-generation because their "
                                 "client left", registry=r)

    def on_batch(self, size: int, seconds: float, waits: list[float]) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        for w in waits:
            self.queue_wait.observe(w)

    def render(self) -> bytes:
        return generate_latest(self.registry)
