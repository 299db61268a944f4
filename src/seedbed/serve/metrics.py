"""Prometheus metrics of the server (`GET /metrics`): requests, errors, tokens in and out, latency, queue depth."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ServerMetrics:
    def __init__(self, engines: dict):
        self.registry = CollectorRegistry()  # one per app, so tests and several apps in a process stay apart
        self.requests = Counter("seedbed_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("seedbed_errors", "Requests answered with an error", ["endpoint", "type"],
                              registry=self.registry)
        self.tokens_in = Counter("seedbed_prompt_tokens", "Prompt tokens", ["model"], registry=self.registry)
        self.tokens_out = Counter("seedbed_completion_tokens", "Completion tokens", ["model"], registry=self.registry)
        self.latency = Histogram("seedbed_request_seconds", "Request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.first_token = Histogram("seedbed_time_to_first_token_seconds", "Time to first streamed token",
                                     ["model"], registry=self.registry, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        queue = Gauge("seedbed_queue_depth", "Requests waiting for a batch", ["model"], registry=self.registry)
        running = Gauge("seedbed_running", "Requests in the batch being decoded", ["model"], registry=self.registry)
        for name, engine in engines.items():
            queue.labels(name).set_function(lambda e=engine: e.queue_depth)
            running.labels(name).set_function(lambda e=engine: e.running)

    def render(self) -> bytes:
        return generate_latest(self.registry)
