"""/healthz, /readyz and /metrics: unauthenticated, for orchestrators and Prometheus; no patient data."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from recon_service.api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness",
            description="200 while the process serves requests.")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, summary="Readiness",
            description="200 once the shipped models are loaded and have run once (warm-up), here and in at "
                        "least one job worker; 503 before that, when warm-up failed, or with no live worker, "
                        "with the reason.",
            responses={503: {"model": Readiness, "description": "Not ready yet, or warm-up failed."}})
async def readyz(request: Request) -> JSONResponse:
    report = request.app.state.warmup.report()
    background = request.app.state.background
    if report.ready and request.app.state.settings.run_workers:
        alive, ready = (0, 0) if background is None else await run_in_threadpool(
            lambda: (background.workers_alive(), background.workers_ready()))
        if ready == 0:
            report = report.model_copy(update={
                "ready": False, "status": "workers warming up" if alive else "no workers",
                "detail": "the job workers are loading the models" if alive else "no job worker process runs"})
    return JSONResponse(report.model_dump(), status_code=200 if report.ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            description="Jobs by state, queue depth, job durations, active engine provider, HTTP requests by "
                        "route and status (Prometheus text format).",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus exposition."}})
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(generate_latest, request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
