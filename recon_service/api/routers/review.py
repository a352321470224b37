"""The review tool's API: the worklist, a job's comparison images slice by slice, and the reviewer's decision.

The tool itself (static pages, no build step) is served at /review by ``recon_service.review.pages``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from recon_service.api import auditing
from recon_service.api.deps import Offset, context_of, job_or_404, outbox_of
from recon_service.api.errors import AUTH_ERRORS, errors
from recon_service.api.schemas import DeliveryOut
from recon_service.context import ServiceContext
from recon_service.jobs.catalog import get_pipeline
from recon_service.jobs.store import JobRecord, JobState
from recon_service.review.decisions import AlreadyReviewed, Decision, Reviews
from recon_service.security import Principal, require_scope
from recon_service.storage import StorageError, result_file

router = APIRouter(prefix="/v1", tags=["review"])
Reader = Annotated[Principal, Depends(require_scope("jobs:read"))]
Reviewer = Annotated[Principal, Depends(require_scope("review"))]
Context = Annotated[ServiceContext, Depends(context_of)]
PANE_ORDER = ("recon", "zero-filled", "classical", "reference", "uncertainty")


class DecisionIn(BaseModel):
    decision: Literal["approve", "reject"]
    comment: str = Field("", max_length=2000, description="why (required to reject)")


class ReviewOut(BaseModel):
    decision: str = Field(description="approved or rejected (final)")
    comment: str
    reviewer: str
    decided_at: Any

    @classmethod
    def of(cls, d: Decision) -> ReviewOut:
        return cls(decision=d.decision, comment=d.comment, reviewer=d.reviewer, decided_at=d.decided_at)


class ReviewResult(BaseModel):
    review: ReviewOut
    deliveries: list[DeliveryOut]


class WorklistItem(BaseModel):
    id: str
    pipeline: str
    learned: bool
    model_id: str | None
    state: JobState
    progress: float
    created_at: Any
    finished_at: Any | None
    patient_name: str | None
    patient_id: str | None
    accession_number: str | None
    study_description: str | None
    review: str = Field(description="pending (not decided), approved or rejected; 'n/a' for jobs not succeeded")
    deliveries: dict[str, str] = Field(description="destination -> delivery state")
    metrics: dict[str, float | None] | None = None
    flagged: bool = Field(False, description="the learned image is out of distribution (its consistency report)")
    flags: list[str] = Field(default_factory=list, description="why it is flagged")


class PaneOut(BaseModel):
    name: str = Field(description="recon, zero-filled, classical, reference or uncertainty")
    label: str
    slices: int
    rows: int
    columns: int
    minimum: float
    maximum: float
    p01: float = Field(description="0.5th percentile (the default window's low end)")
    p99: float = Field(description="99.5th percentile (the default window's high end)")


def reviews_of(context: ServiceContext) -> Reviews:
    return Reviews(context.engine, context.pacs)




def _learned(pipeline: str) -> bool:
    try:
        return get_pipeline(pipeline).learned
    except KeyError:
        return False


def _worklist(context: ServiceContext, state: str | None, pipeline: str | None) -> list[WorklistItem]:
    jobs = context.store.list(state, pipeline, None, 500, 0)
    decisions = reviews_of(context).of_jobs([j.id for j in jobs])
    deliveries = outbox_of(context).for_jobs([j.id for j in jobs])
    items = []
    for job in jobs:
        provenance = (job.result or {}).get("provenance") or {}
        decided = decisions.get(job.id)
        review = decided.decision if decided else ("pending" if job.state == JobState.SUCCEEDED else "n/a")
        items.append(WorklistItem(
            id=job.id, pipeline=job.pipeline, learned=_learned(job.pipeline), model_id=provenance.get("model_id"),
            state=job.state, progress=job.progress, created_at=job.created_at, finished_at=job.finished_at,
            patient_name=job.study.get("PatientName"), patient_id=job.study.get("PatientID"),
            accession_number=job.study.get("AccessionNumber"), study_description=job.study.get("StudyDescription"),
            review=review, deliveries={d.destination: d.state for d in deliveries.get(job.id, [])},
            metrics=(job.result or {}).get("metrics"), flagged=bool(job.flags), flags=job.flags))
    return items


@router.get("/review/worklist", response_model=list[WorklistItem], summary="The review worklist",
            description="Jobs with patient and study, pipeline, model, state, review and delivery state; newest "
                        "first unless sorted otherwise.",
            responses=errors(*AUTH_ERRORS, 422), openapi_extra={auditing.AUDIT_KEY: "review.worklist"})
async def worklist(
    request: Request, principal: Reader, context: Context,
    state: Annotated[JobState | None, Query()] = None,
    pipeline: Annotated[str | None, Query(max_length=64)] = None,
    review: Annotated[Literal["pending", "approved", "rejected"] | None, Query()] = None,
    learned: Annotated[bool | None, Query(description="only learned (true) or classical (false) pipelines")] = None,
    sort: Annotated[Literal["created", "-created", "patient", "pipeline", "state"], Query()] = "-created",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> list[WorklistItem]:
    items = await run_in_threadpool(_worklist, context, state.value if state else None, pipeline)
    items = [i for i in items if (review is None or i.review == review) and (learned is None or i.learned == learned)]
    keys = {"created": lambda i: i.created_at, "-created": lambda i: i.created_at,
            "patient": lambda i: (i.patient_name or "", i.patient_id or ""), "pipeline": lambda i: i.pipeline,
            "state": lambda i: i.state.value}
    items.sort(key=keys[sort], reverse=sort == "-created")
    page = items[offset:offset + limit]
    await auditing.record(request, "review.worklist", "ok", principal, detail=f"returned={len(page)}")
    return page


def _panes_dir(context: ServiceContext, job: JobRecord) -> Path:
    relative = ((job.result or {}).get("files") or {}).get("panes")
    if job.state != JobState.SUCCEEDED or not isinstance(relative, str):
        raise HTTPException(404, f"job {job.id} has no review images (learned pipelines' results have them)")
    try:
        return result_file(context.settings.data_dir, relative)
    except StorageError as err:
        raise HTTPException(404, f"job {job.id}: its review images are not readable") from err


def _pane_info(folder: Path) -> list[PaneOut]:
    from pipelines.comparison import LABELS

    out = []
    names = sorted((p.stem for p in folder.glob("*.npy")), key=lambda n: PANE_ORDER.index(n)
                   if n in PANE_ORDER else len(PANE_ORDER))
    for name in names:
        volume = np.load(folder / f"{name}.npy", mmap_mode="r")
        low, high = np.percentile(volume, [0.5, 99.5])
        out.append(PaneOut(name=name, label=LABELS.get(name, name), slices=volume.shape[0], rows=volume.shape[1],
                           columns=volume.shape[2], minimum=float(volume.min()), maximum=float(volume.max()),
                           p01=float(low), p99=float(high)))
    return out


@router.get("/jobs/{job_id}/panes", response_model=list[PaneOut], summary="A job's review images",
            description="The learned reconstruction and what it is compared with (zero-filled/direct, classical, "
                        "reference, uncertainty), each as float32 slices at /v1/jobs/{id}/panes/{name}/{slice}.",
            responses=errors(*AUTH_ERRORS, 404), openapi_extra={auditing.AUDIT_KEY: "review.open"})
async def panes(job_id: str, request: Request, principal: Reader, context: Context) -> list[PaneOut]:
    job = await job_or_404(context, job_id)
    found = await run_in_threadpool(_pane_info, _panes_dir(context, job))
    await auditing.record(request, "review.open", "ok", principal, job.id, job.study_uid,
                          f"panes {', '.join(p.name for p in found)}")
    return found


@router.get("/jobs/{job_id}/panes/{name}/{index}", summary="One slice of a review image (float32)",
            description="Little-endian float32, rows x columns, row-major; X-Rows and X-Columns headers. Slices "
                        "never change once written (cache them). Opening the job (GET .../panes) is what the audit "
                        "log records, not every slice.",
            response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}, **errors(*AUTH_ERRORS, 404)})
async def pane_slice(job_id: str, name: Literal["recon", "zero-filled", "classical", "reference", "uncertainty"],
                     index: int, principal: Reader, context: Context) -> Response:
    job = await job_or_404(context, job_id)
    path = _panes_dir(context, job) / f"{name}.npy"
    if not path.is_file():
        raise HTTPException(404, f"job {job.id} has no {name} image")

    def read() -> np.ndarray:
        volume = np.load(path, mmap_mode="r")
        if not 0 <= index < volume.shape[0]:
            raise HTTPException(404, f"{name} has slices 0 to {volume.shape[0] - 1}")
        return np.ascontiguousarray(volume[index], dtype="<f4")

    image = await run_in_threadpool(read)
    return Response(image.tobytes(), media_type="application/octet-stream",
                    headers={"X-Rows": str(image.shape[0]), "X-Columns": str(image.shape[1]),
                             "Cache-Control": "private, max-age=86400, immutable"})


@router.post("/jobs/{job_id}/review", response_model=ReviewResult, summary="Approve or reject a result",
             description="JSON {\"decision\": \"approve\" | \"reject\", \"comment\": \"...\"} (a rejection needs "
                         "a comment). Approval sends the series to the PACS through the outbox; rejection keeps it "
                         "out of the archive. Both are final (409 for a second decision).",
             responses=errors(*AUTH_ERRORS, 404, 409, 422),
             openapi_extra={auditing.AUDIT_KEY: "review.decide", "requestBody": {
                 "required": True, "content": {"application/json": {"schema": DecisionIn.model_json_schema()}}}})
async def decide(job_id: str, request: Request, principal: Reviewer, context: Context) -> ReviewResult:
    # the body is read after the token check, so an anonymous call is 401 whatever it sends
    try:
        body = DecisionIn.model_validate(json.loads(await request.body() or b"null"))
    except (ValueError, ValidationError) as err:
        raise HTTPException(422, f"body: {err}".splitlines()[0][:500]) from err
    job = await job_or_404(context, job_id)
    if job.state != JobState.SUCCEEDED:
        raise HTTPException(409, f"job {job.id} has no result to review: it is {job.state.value}")
    try:
        decision = await run_in_threadpool(reviews_of(context).decide, job.id, job.pipeline, body.decision,
                                           body.comment, principal.name)
    except AlreadyReviewed as err:
        raise HTTPException(409, str(err)) from err
    except ValueError as err:
        raise HTTPException(422, str(err)) from err
    deliveries = await run_in_threadpool(outbox_of(context).for_job, job.id)
    await auditing.record(request, f"review.{body.decision}", "ok", principal, job.id, job.study_uid,
                          f"{decision.decision}; comment {len(decision.comment)} characters; deliveries "
                          f"{', '.join(f'{d.destination}={d.state}' for d in deliveries) or 'none'}")
    return ReviewResult(review=ReviewOut.of(decision), deliveries=[DeliveryOut.of(d) for d in deliveries])
