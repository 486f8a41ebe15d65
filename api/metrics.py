"""Prometheus metrics of the API process, in a registry of its own (one per app, so that
tests can build several apps in one process), served at ``/metrics``.

- ``ansim_api_requests_total{method,route,status}`` and ``ansim_api_request_seconds{route}``
  (route is the path template, ``/v1/bindings/{binding_id}``: no ids, no numbers);
- ``ansim_api_pool_exhausted_total{tenant,pool}``: allocations refused for want of a number;
- ``ansim_api_bindings_created_total{kind,allocated}``;
- the writer's ``ansim_api_write_batch_size`` and ``ansim_api_write_batch_seconds``;
- webhooks: ``ansim_api_webhook_queued_total`` (deliveries queued),
  ``ansim_api_webhook_deliveries_total{result}`` (attempts: delivered, failed, dead,
  dropped), ``ansim_api_webhook_dead_letters_total{tenant}``, ``ansim_api_webhook_pending``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ApiMetrics", "RequestMetrics"]


class ApiMetrics:
    """The API's metrics and their registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "ansim_api_requests",
            "API requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ansim_api_request_seconds",
            "Time to answer an API request",
            ["route"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5),
            registry=self.registry,
        )
        self.pool_exhausted = Counter(
            "ansim_api_pool_exhausted",
            "Allocations refused because no number of the pool fitted",
            ["tenant", "pool"],
            registry=self.registry,
        )
        self.created = Counter(
            "ansim_api_bindings_created",
            "Bindings created through the API",
            ["kind", "allocated"],
            registry=self.registry,
        )
        self.webhook_queued = Counter(
            "ansim_api_webhook_queued",
            "Webhook deliveries queued (one per event and receiver)",
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "ansim_api_webhook_deliveries",
            "Webhook delivery attempts by result",
            ["result"],
            registry=self.registry,
        )
        self.webhook_dead = Counter(
            "ansim_api_webhook_dead_letters",
            "Webhook deliveries set aside undelivered after webhooks.dead_after",
            ["tenant"],
            registry=self.registry,
        )
        self.webhook_pending = Gauge(
            "ansim_api_webhook_pending",
            "Webhook deliveries queued and not yet delivered",
            registry=self.registry,
        )


class RequestMetrics:
    """ASGI middleware counting and timing every HTTP request by its route template."""

    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - started)
