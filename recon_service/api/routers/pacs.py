"""PACS delivery: the configured destinations, a job's deliveries, and pushing a result to a destination (a learned
result once it is approved in review)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from recon_service.api import auditing
from recon_service.api.deps import context_of, job_or_404, outbox_of
from recon_service.api.errors import AUTH_ERRORS, errors
from recon_service.api.schemas import DeliveryOut, DestinationOut
from recon_service.context import ServiceContext
from recon_service.jobs.store import JobRecord, JobState
from recon_service.pacs.config import DicomWebDestination
from recon_service.pacs.outbox import DeliveryExists
from recon_service.security import Principal, require_scope

router = APIRouter(prefix="/v1", tags=["pacs"])
Reader = Annotated[Principal, Depends(require_scope("jobs:read"))]
Submitter = Annotated[Principal, Depends(require_scope("jobs:submit"))]
Context = Annotated[ServiceContext, Depends(context_of)]


async def _succeeded_job(context: ServiceContext, job_id: str) -> JobRecord:
    job = await job_or_404(context, job_id)
    if job.state != JobState.SUCCEEDED:
        raise HTTPException(409, f"job {job.id} has no results to deliver: it is {job.state.value}")
    return job


def _check_reviewed(context: ServiceContext, job: JobRecord) -> None:
    """409 for a result a reviewer rejected, or a learned one still waiting for approval."""
    from recon_service.jobs.catalog import get_pipeline
    from recon_service.review.decisions import Reviews

    decision = Reviews(context.engine, context.pacs).get(job.id)
    if decision is not None and decision.decision == "rejected":
        raise HTTPException(409, f"job {job.id} was rejected in review; it stays out of the archive")
    if decision is None and job.flags:
        raise HTTPException(409, f"job {job.id} is flagged out of distribution ({'; '.join(job.flags)}); a reviewer "
                                 "must approve it in the review tool first")
    if decision is None and context.pacs.needs_review(job.pipeline, get_pipeline(job.pipeline).learned):
        raise HTTPException(409, f"job {job.id} is a learned result waiting for review; approve it in the review "
                                 "tool first")



@router.get("/pacs/destinations", response_model=list[DestinationOut], summary="List PACS destinations",
            description="The destinations of RECON_PACS_CONFIG (no credentials) and which pipelines deliver to "
                        "each on their own.", responses=errors(*AUTH_ERRORS))
async def destinations(principal: Reader, context: Context) -> list[DestinationOut]:
    config = context.pacs
    out = []
    for name, dest in sorted(config.destinations.items()):
        target = dest.url if isinstance(dest, DicomWebDestination) else f"{dest.called_ae}@{dest.host}:{dest.port}"
        rules = sorted(p for p, names in config.auto_deliver.items() if name in names)
        out.append(DestinationOut(name=name, kind=dest.kind, target=target, deidentify=dest.deidentify,
                                  auto_deliver=rules))
    return out


@router.get("/jobs/{job_id}/deliveries", response_model=list[DeliveryOut], summary="A job's PACS deliveries",
            responses=errors(*AUTH_ERRORS, 404), openapi_extra={auditing.AUDIT_KEY: "pacs.read"})
async def job_deliveries(job_id: str, request: Request, principal: Reader, context: Context) -> list[DeliveryOut]:
    job = await job_or_404(context, job_id)
    found = await run_in_threadpool(outbox_of(context).for_job, job.id)
    await auditing.record(request, "pacs.read", "ok", principal, job.id, job.study_uid)
    return [DeliveryOut.of(d) for d in found]


@router.post("/jobs/{job_id}/deliveries", status_code=202, response_model=DeliveryOut,
             summary="Send a job's result to a PACS destination",
             description="Queues the result series (and the uncertainty series, when there is one) for the "
                         "destination; the outbox sends them, retrying until the destination takes them. A failed "
                         "earlier delivery to the same destination is queued again; an open or delivered one "
                         "answers 409.",
             responses=errors(*AUTH_ERRORS, 404, 409, 422), openapi_extra={auditing.AUDIT_KEY: "pacs.request"})
async def request_delivery(
    job_id: str, request: Request, response: Response, principal: Submitter, context: Context,
    destination: Annotated[str, Query(min_length=1, max_length=64,
                                      description="a configured destination (GET /v1/pacs/destinations)")],
) -> DeliveryOut:
    job = await _succeeded_job(context, job_id)
    await run_in_threadpool(_check_reviewed, context, job)
    try:
        record = await run_in_threadpool(outbox_of(context).request, job.id, destination, principal.name)
    except KeyError as err:
        raise HTTPException(422, str(err.args[0])) from err
    except DeliveryExists as err:
        raise HTTPException(409, str(err)) from err
    response.headers["Location"] = f"/v1/jobs/{job.id}/deliveries"
    await auditing.record(request, "pacs.request", "ok", principal, job.id, job.study_uid,
                          f"destination {destination}")
    return DeliveryOut.of(record)
