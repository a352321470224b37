"""Prometheus metrics of one app: a registry of its own, job figures read from the store at scrape time.

Job counts, queue depth and durations come from the database on every scrape, so they are right whichever
process (API or worker) changed a job; HTTP request counts are counted in this process by route template.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recon_service.db.schema import Job
from recon_service.jobs.store import FINAL_STATES

DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class ServiceCollector(Collector):
    """Jobs by state, queue depth, job durations, the PACS outbox per destination and the active engine provider,
    read when scraped."""

    def __init__(self, app_state: Any):
        self.state = app_state

    def collect(self) -> Iterator[Metric]:
        context = getattr(self.state, "context", None)
        if context is None:  # scraped before the lifespan started
            return
        counts = context.store.count_by_state()
        jobs = GaugeMetricFamily("recon_jobs", "Jobs in the store by state", labels=["state"])
        for state, n in sorted(counts.items()):
            jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily("recon_queue_depth", "Jobs waiting to be run", value=counts.get("queued", 0))
        yield self._durations(context.engine)
        if context.pacs.enabled:
            yield from self._deliveries(context)
        warm = getattr(self.state, "warmup", None)
        provider = (warm.provider if warm is not None else None) or "unknown"
        yield InfoMetricFamily("recon_engine_provider", "Active ONNX Runtime execution provider (from warm-up)",
                               value={"provider": provider})

    @staticmethod
    def _deliveries(context) -> Iterator[Metric]:  # noqa: ANN001
        from recon_service.pacs.outbox import AWAITING_APPROVAL, DELIVERED, FAILED, PENDING, SENDING, Outbox

        figures = Outbox(context.engine, context.pacs).figures()
        depth = GaugeMetricFamily("recon_pacs_outbox_depth", "Deliveries waiting to be sent or being sent",
                                  labels=["destination"])
        review = GaugeMetricFamily("recon_pacs_awaiting_approval", "Deliveries of learned results waiting for review",
                                   labels=["destination"])
        done = GaugeMetricFamily("recon_pacs_deliveries", "Finished deliveries by outcome",
                                 labels=["destination", "outcome"])
        failures = CounterMetricFamily("recon_pacs_delivery_failures", "Failed delivery attempts (retried or final)",
                                       labels=["destination"])
        for name, counts in sorted(figures.items()):
            depth.add_metric([name], counts.get(PENDING, 0) + counts.get(SENDING, 0))
            review.add_metric([name], counts.get(AWAITING_APPROVAL, 0))
            for outcome in (DELIVERED, FAILED):
                done.add_metric([name, outcome], counts.get(outcome, 0))
            failures.add_metric([name], counts.get("failures", 0))
        yield from (depth, review, done, failures)

    @staticmethod
    def _durations(engine) -> HistogramMetricFamily:
        family = HistogramMetricFamily("recon_job_duration_seconds", "Run time of finished jobs (start to end)",
                                       labels=["state"])
        seconds = Job.run_seconds
        below = [func.sum(case((seconds <= b, 1), else_=0)) for b in DURATION_BUCKETS]
        query = (select(Job.state, func.count(), func.sum(seconds), *below)
                 .where(Job.state.in_([s.value for s in FINAL_STATES]), seconds.is_not(None))
                 .group_by(Job.state).order_by(Job.state))
        with Session(engine) as session:  # one aggregate row per state, however many jobs are stored
            for state, count, total, *counts in session.execute(query):
                buckets = [(str(float(b)), int(n)) for b, n in zip(DURATION_BUCKETS, counts, strict=True)]
                family.add_metric([state], [*buckets, ("+Inf", int(count))], float(total))
        return family


def make_registry(app_state: Any) -> tuple[CollectorRegistry, Counter]:
    """A fresh registry with the service collector and the HTTP request counter."""
    registry = CollectorRegistry()
    registry.register(ServiceCollector(app_state))
    requests = Counter("recon_http_requests", "HTTP requests by method, route template and status",
                       ["method", "route", "status"], registry=registry)
    return registry, requests


class RequestMetrics:
    """ASGI middleware counting requests by route template (``/v1/jobs/{job_id}``, not the raw path)."""

    def __init__(self, app: ASGIApp, counter: Callable[[], Counter]):
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            self.counter().labels(scope["method"], route, str(status)).inc()
