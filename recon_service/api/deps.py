"""Shared FastAPI dependencies and query parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from recon_service.context import ServiceContext
from recon_service.jobs.store import JobRecord


def context_of(request: Request) -> ServiceContext:
    """The app's :class:`ServiceContext` (built by the lifespan)."""
    return request.app.state.context


# Far beyond any real listing and inside the databases' integer types: SQLite refuses OFFSET values past 2**63 - 1
# with an OverflowError, which would answer 500 instead of 422.
MAX_OFFSET = 2**31 - 1

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="how many entries to skip (paging)")]


def outbox_of(context: ServiceContext):  # noqa: ANN201 - recon_service.pacs.outbox.Outbox
    """The PACS outbox of the service's database and configuration."""
    from recon_service.pacs.outbox import Outbox

    return Outbox(context.engine, context.pacs)


async def job_or_404(context: ServiceContext, job_id: str) -> JobRecord:
    """The job ``job_id``; 404 naming it when there is none."""
    job = await run_in_threadpool(context.store.get, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id[:64]!r}")
    return job
