"""/v1/jobs: submit, inspect, list and cancel reconstruction jobs, and download their results."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from recon_service.api import auditing
from recon_service.api.deps import Offset, context_of, job_or_404, outbox_of
from recon_service.api.errors import AUTH_ERRORS, errors
from recon_service.api.schemas import JobAccepted, JobList, JobOut
from recon_service.api.submission import submit
from recon_service.context import ServiceContext
from recon_service.jobs.store import JobConflict, JobState
from recon_service.review.decisions import Reviews
from recon_service.security import Principal, require_scope
from recon_service.storage import StorageError, result_file

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

Submitter = Annotated[Principal, Depends(require_scope("jobs:submit"))]
Reader = Annotated[Principal, Depends(require_scope("jobs:read"))]
Context = Annotated[ServiceContext, Depends(context_of)]

MEDIA_TYPES = {"dicom": ("application/zip", "zip"), "nifti": ("application/gzip", "nii.gz"),
               "png": ("image/png", "png"), "metrics": ("application/json", "json"),
               "uncertainty": ("application/gzip", "nii.gz"), "uncertainty-dicom": ("application/zip", "zip")}

_SUBMIT_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": ["file", "pipeline"],
        "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                     "description": "one raw-data HDF5 file (fastMRI, ISMRMRD or sinogram) and optionally DICOM "
                                    "files of the source study; repeat the 'file' part for each"},
            "pipeline": {"type": "string", "description": "a name from GET /v1/pipelines, e.g. mri-cg-sense"},
            "params": {"type": "string", "description": "JSON object of pipeline parameters; keys must be among "
                                                        "the pipeline's defaults"},
            "study": {"type": "string", "description": "JSON object of patient/study attributes (DICOM keywords, "
                                                       "e.g. StudyInstanceUID); overrides the DICOM files' values"},
            "study_lookup": {"type": "string", "description": "JSON object naming a study to look up in a PACS "
                                                              "(QIDO-RS or C-FIND): {\"AccessionNumber\": ...} or "
                                                              "{\"StudyInstanceUID\": ...}, optionally with "
                                                              "\"source\": a destination name; its patient and "
                                                              "study attributes fill what 'study' leaves out"},
        }}}},
}




@router.post(
    "", status_code=202, response_model=JobAccepted, summary="Submit a reconstruction job",
    description="Upload one raw-data file (plus optional DICOM files of the source study) as multipart "
                "'file' parts with the 'pipeline' name. The files are checked and stored durably before the "
                "job is queued. Answers 202 with the job id and a Location header; a repeated "
                "Idempotency-Key of the same token answers 200 with the job it created before.",
    responses={200: {"model": JobAccepted, "description": "Repeated Idempotency-Key: the existing job."},
               202: {"description": "Queued; poll the Location.",
                     "headers": {"Location": {"description": "the job's URL", "schema": {"type": "string"}}}},
               **errors(400, *AUTH_ERRORS, 413, 415, 422, 502, 503)},
    openapi_extra={auditing.AUDIT_KEY: "job.submit", "requestBody": _SUBMIT_BODY},
)
async def submit_job(
    request: Request, response: Response, principal: Submitter, context: Context,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=1, max_length=200,
        description="client-chosen key; repeating it returns the same job instead of creating another")] = None,
) -> JobAccepted:
    job, created = await submit(request, context, principal, idempotency_key)
    response.status_code = 202 if created else 200
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    await auditing.record(request, "job.submit", "ok" if created else "duplicate", principal, job.id,
                          job.study_uid, f"pipeline {job.pipeline}")
    return JobAccepted(id=job.id, state=job.state)


@router.get(
    "", response_model=JobList, summary="List jobs",
    description="Newest first, filtered by state and pipeline.",
    responses=errors(*AUTH_ERRORS, 422), openapi_extra={auditing.AUDIT_KEY: "job.list"},
)
async def list_jobs(
    request: Request, principal: Reader, context: Context,
    state: Annotated[JobState | None, Query(description="only jobs in this state")] = None,
    pipeline: Annotated[str | None, Query(max_length=64, description="only jobs of this pipeline")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> JobList:
    jobs = await run_in_threadpool(context.store.list, state.value if state else None, pipeline, None, limit, offset)
    await auditing.record(request, "job.list", "ok", principal,
                          detail=f"state={state.value if state else '*'} pipeline={pipeline or '*'} "
                                 f"limit={limit} offset={offset} returned={len(jobs)}")
    return JobList(items=[JobOut.of(j) for j in jobs], limit=limit, offset=offset)


@router.get(
    "/{job_id}", response_model=JobOut, summary="Get a job",
    description="State, progress and current step, the error of a failed job, inputs, times and the result "
                "formats available.",
    responses=errors(*AUTH_ERRORS, 404), openapi_extra={auditing.AUDIT_KEY: "job.read"},
)
async def get_job(job_id: str, request: Request, principal: Reader, context: Context) -> JobOut:
    job = await job_or_404(context, job_id)
    deliveries = await run_in_threadpool(outbox_of(context).for_job, job.id)
    review = await run_in_threadpool(Reviews(context.engine, context.pacs).get, job.id)
    await auditing.record(request, "job.read", "ok", principal, job.id, job.study_uid)
    return JobOut.of(job, deliveries, review)


@router.post(
    "/{job_id}/cancel", response_model=JobOut, summary="Cancel a job",
    description="A queued job is cancelled at once; a running one is asked to stop and ends as cancelled "
                "at its next step. Finished jobs answer 409.",
    responses=errors(*AUTH_ERRORS, 404, 409), openapi_extra={auditing.AUDIT_KEY: "job.cancel"},
)
async def cancel_job(job_id: str, request: Request, principal: Submitter, context: Context) -> JobOut:
    try:
        job = await run_in_threadpool(context.store.cancel, job_id)
    except KeyError as err:
        raise HTTPException(404, f"no job {job_id[:64]!r}") from err
    except JobConflict as err:
        raise HTTPException(409, str(err)) from err
    await auditing.record(request, "job.cancel", "ok", principal, job.id, job.study_uid, f"state {job.state}")
    return JobOut.of(job)


@router.get(
    "/{job_id}/result", summary="Download a result",
    description="dicom: the DICOM series as a zip; nifti: the volume (.nii.gz); png: a preview; metrics: "
                "PSNR/SSIM/NMSE JSON (only when the input had a reference); uncertainty: a diffusion method's "
                "standard deviation map over its draws (.nii.gz), uncertainty-dicom: the same map as a DICOM "
                "series of the image series' study (zip). 409 until the job succeeded.",
    response_class=FileResponse,
    responses={200: {"description": "The file.", "content": {m: {} for m, _ in MEDIA_TYPES.values()}},
               **errors(*AUTH_ERRORS, 404, 409, 422)},
    openapi_extra={auditing.AUDIT_KEY: "job.result"},
)
async def get_result(
    job_id: str, request: Request, principal: Reader, context: Context,
    format: Annotated[Literal["dicom", "nifti", "png", "metrics", "uncertainty", "uncertainty-dicom"],
                      Query(description="which result (uncertainty, uncertainty-dicom: the diffusion methods' std "
                                        "map as NIfTI or DICOM series, when asked for with samples > 1)")],
) -> FileResponse:
    job = await job_or_404(context, job_id)
    if job.state != JobState.SUCCEEDED:
        raise HTTPException(409, f"job {job.id} has no results: it is {job.state.value}")
    relative = ((job.result or {}).get("files") or {}).get(format)
    if not isinstance(relative, str):
        hint = {"metrics": " (metrics need a reference in the input)",
                "uncertainty": " (a diffusion method run with samples > 1 writes one)",
                "uncertainty-dicom": " (a diffusion method run with samples > 1 writes one)"}.get(format, "")
        raise HTTPException(404, f"job {job.id} has no {format} result{hint}")
    try:
        path = result_file(context.settings.data_dir, relative)
    except StorageError as err:
        raise HTTPException(404, f"job {job.id}: the stored {format} result is not readable") from err
    if not path.is_file():
        raise HTTPException(404, f"job {job.id}: the {format} result file is missing")
    media_type, ext = MEDIA_TYPES[format]
    await auditing.record(request, "job.result", "ok", principal, job.id, job.study_uid, f"format {format}")
    return FileResponse(path, media_type=media_type, filename=f"{job.id}-{format}.{ext}")
