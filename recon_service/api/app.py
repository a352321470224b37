"""The FastAPI application: routers, error handling with auditing, metrics and the lifespan.

The lifespan opens the database (``ServiceContext``), recovers jobs a previous run left behind and starts the
job workers (``start_background``), and warms the models up in the background; /readyz answers 200 after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from recon_service.api import auditing
from recon_service.api.background import start_background
from recon_service.api.body_drain import DrainBody
from recon_service.api.metrics import RequestMetrics, make_registry
from recon_service.api.readiness import WarmUp
from recon_service.api.routers import audit, catalog, dicomweb, health, jobs, pacs, review
from recon_service.api.uploads import FORM_OVERHEAD
from recon_service.context import ServiceContext
from recon_service.review.pages import mount_review_tool
from recon_service.settings import Settings, get_settings

LOG = logging.getLogger(__name__)

DESCRIPTION = """Reconstruction of accelerated MRI and sparse-view CT raw data as jobs.

Submit a raw-data file with `POST /v1/jobs`, poll `GET /v1/jobs/{id}`, download the images with
`GET /v1/jobs/{id}/result?format=dicom|nifti|png|metrics`.

Every `/v1` route needs a bearer token (`Authorization: Bearer ...`) with a scope: `jobs:submit`,
`jobs:read`, `review` or `admin` (admin implies all). Calls on jobs are written to an append-only audit log,
refused ones included. `/healthz`, `/readyz` and `/metrics` are open and hold no patient data.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app for ``settings`` (default: from the ``RECON_*`` environment)."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = await asyncio.to_thread(ServiceContext.create, settings)
        app.state.context = context
        background = await asyncio.to_thread(start_background, context)
        app.state.background = background
        warm_task = asyncio.create_task(app.state.warmup.run(settings))
        LOG.info("recon service started (data dir %s, %s)", settings.data_dir,
                 "workers running" if background.running else "no workers")
        try:
            yield
        finally:
            warm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warm_task
            await asyncio.to_thread(background.stop)
            context.engine.dispose()

    app = FastAPI(title="recon-service", version=_version(), description=DESCRIPTION, lifespan=lifespan,
                  openapi_tags=[{"name": "jobs", "description": "Reconstruction jobs (patient data)."},
                                {"name": "review", "description": "The review tool's worklist, images and decisions "
                                                                  "(the tool itself: /review)."},
                                {"name": "pacs", "description": "Delivery of results to PACS destinations."},
                                {"name": "dicomweb", "description": "STOW-RS in; QIDO-RS, WADO-RS out (results)."},
                                {"name": "catalog", "description": "Pipelines and shipped models."},
                                {"name": "audit", "description": "The audit log (admin)."},
                                {"name": "health", "description": "Liveness, readiness, metrics (no auth)."}])
    app.state.settings = settings
    app.state.warmup = WarmUp()
    app.state.background = None
    app.state.metrics_registry, requests = make_registry(app.state)
    # answers only after the body is read (up to the upload limit): a client still sending gets no reset
    app.add_middleware(DrainBody, max_bytes=int(settings.max_upload_mb * 2**20) + FORM_OVERHEAD)
    app.add_middleware(RequestMetrics, counter=lambda: requests)
    if settings.cors_origins:  # a viewer on another origin (OHIF) reading /dicomweb with its bearer token
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Accept"])
    app.add_exception_handler(StarletteHTTPException, auditing.audited_http_exception)
    app.add_exception_handler(RequestValidationError, auditing.audited_validation_error)
    for module in (jobs, review, pacs, dicomweb, catalog, audit, health):
        app.include_router(module.router)
    mount_review_tool(app)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("recon-service")
    except PackageNotFoundError:
        return "0.0.0"
