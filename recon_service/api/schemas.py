"""Response models of the HTTP API (what the OpenAPI document shows and what clients get)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from recon_service.jobs.catalog import PipelineInfo
from recon_service.jobs.store import JobRecord, JobState

RESULT_FORMATS = ("dicom", "nifti", "png", "metrics", "uncertainty", "uncertainty-dicom")


class ErrorResponse(BaseModel):
    detail: str | list[Any] = Field(description="what was wrong, naming the field, file part or job")


class JobAccepted(BaseModel):
    id: str = Field(description="job id; poll GET /v1/jobs/{id}")
    state: JobState = Field(description="'queued' for a new job; the current state for a repeated idempotent "
                                        "submission")


class JobInputOut(BaseModel):
    position: int
    filename: str = Field(description="the stored (sanitised) file name")
    size: int = Field(description="bytes")
    sha256: str
    kind: str = Field(description="fastmri, ismrmrd, sinogram or dicom, from the file's content")


class DeliveryOut(BaseModel):
    destination: str = Field(description="a configured PACS destination (GET /v1/pacs/destinations)")
    state: str = Field(description="awaiting-approval (a learned result waits for review), pending, sending, "
                                   "delivered or failed")
    requested_by: str = Field(description="'auto' (the pipeline's delivery rule) or the token that asked")
    attempts: int
    failures: int = Field(description="attempts that failed so far")
    instances: int | None = Field(None, description="DICOM instances in the delivery (image and uncertainty "
                                                    "series), once counted")
    sent: int = Field(description="instances sent in the current or last attempt")
    last_error: str | None = None
    next_attempt_at: datetime | None = Field(None, description="when a pending delivery is tried next")
    created_at: datetime
    delivered_at: datetime | None = None

    @classmethod
    def of(cls, record: Any) -> DeliveryOut:
        return cls(destination=record.destination, state=record.state, requested_by=record.requested_by,
                   attempts=record.attempts, failures=record.failures, instances=record.instances,
                   sent=record.sent, last_error=record.last_error, next_attempt_at=record.next_attempt_at,
                   created_at=record.created_at, delivered_at=record.delivered_at)


class DestinationOut(BaseModel):
    name: str
    kind: str = Field(description="dicomweb (STOW-RS) or dimse (C-STORE)")
    target: str = Field(description="the DICOMweb root, or AE title@host:port")
    deidentify: bool
    auto_deliver: list[str] = Field(description="pipelines whose results go here on their own ('*': any other)")


class JobOut(BaseModel):
    id: str
    pipeline: str
    state: JobState
    progress: float = Field(ge=0, le=1, description="0..1")
    step: str | None = Field(None, description="what the worker is doing now")
    error: str | None = Field(None, description="why the job failed, in words a person can act on")
    params: dict[str, Any]
    study: dict[str, Any] = Field(description="patient/study of the results: DICOM attributes of the submitted "
                                              "DICOM files, overridden by the submitted 'study'")
    owner: str = Field(description="name of the token that submitted the job")
    attempts: int
    worker: str | None = Field(None, description="the worker process running the job, or the last one that ran "
                                                 "it (host:pid)")
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    inputs: list[JobInputOut]
    results: list[str] = Field(description="result formats available at GET /v1/jobs/{id}/result?format=")
    provenance: dict[str, Any] | None = Field(None, description="method, model id, weights SHA-256, engine "
                                                                "provider, parameters and times of a finished job")
    metrics: dict[str, float | None] | None = Field(None, description="PSNR/SSIM/NMSE against the input's "
                                                                      "reference, when it had one")
    flagged: bool = Field(False, description="the learned image is out of distribution (its consistency report, "
                                             "provenance.consistency_report): never delivered to a PACS without a "
                                             "reviewer's approval")
    flags: list[str] = Field(default_factory=list, description="why it is flagged")
    deliveries: list[DeliveryOut] | None = Field(None, description="the result's PACS deliveries (on GET of one "
                                                                   "job)")
    review: dict[str, Any] | None = Field(None, description="the review decision (approved or rejected, comment, "
                                                            "reviewer, time), on GET of one job once decided")

    @classmethod
    def of(cls, job: JobRecord, deliveries: list[Any] | None = None, review: Any | None = None) -> JobOut:
        result = job.result or {}
        files = result.get("files") or {}
        formats = [f for f in RESULT_FORMATS if isinstance(files.get(f), str)] if job.state == "succeeded" else []
        return cls(id=job.id, pipeline=job.pipeline, state=job.state, progress=job.progress, step=job.step,
                   error=job.error, params=job.params, study=job.study, owner=job.owner, attempts=job.attempts,
                   worker=job.worker, cancel_requested=job.cancel_requested, created_at=job.created_at,
                   started_at=job.started_at, finished_at=job.finished_at, results=formats,
                   provenance=result.get("provenance"), metrics=result.get("metrics"),
                   flagged=bool(job.flags), flags=job.flags,
                   deliveries=None if deliveries is None else [DeliveryOut.of(d) for d in deliveries],
                   review=None if review is None else {"decision": review.decision, "comment": review.comment,
                                                       "reviewer": review.reviewer, "decided_at": review.decided_at},
                   inputs=[JobInputOut(position=i.position, filename=i.filename, size=i.size, sha256=i.sha256,
                                       kind=i.kind) for i in job.inputs])


class JobList(BaseModel):
    items: list[JobOut]
    limit: int
    offset: int


class ParameterOut(BaseModel):
    name: str
    type: str = Field(description="integer, number, boolean, string or array")
    default: Any = Field(description="the value used when the parameter is left out")
    description: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = Field(False, description="the minimum itself is not allowed")
    exclusive_maximum: bool = Field(False, description="the maximum itself is not allowed")
    choices: list[Any] | None = Field(None, description="the allowed values (for an array: of its items)")
    pattern: str | None = Field(None, description="regular expression a string value must match")
    nullable: bool = Field(False, description="null is allowed")
    service: bool = Field(False, description="a service-level key (engine, providers, device), not an algorithm "
                                             "setting")
    allowed: str = Field(description="the allowed values in words, as refusals name them")


class PipelineOut(BaseModel):
    name: str = Field(description="the value of the 'pipeline' form field")
    modality: str
    method: str
    description: str
    input_kinds: list[str] = Field(description="raw-data kinds the pipeline takes (exactly one file per job)")
    learned: bool = Field(description="runs a network from the model zoo")
    parameters: list[ParameterOut] = Field(description="every accepted 'params' key: type, default, range")
    defaults: dict[str, Any] = Field(description="every accepted 'params' key with its default")

    @classmethod
    def of(cls, info: PipelineInfo) -> PipelineOut:
        method = info.method
        parameters = [ParameterOut(**{**asdict(p), "choices": None if p.choices is None else list(p.choices)},
                                   allowed=p.allowed()) for p in method.parameters]
        return cls(name=info.name, modality=info.modality, method=method.name, description=method.summary,
                   input_kinds=list(info.input_kinds), learned=info.learned, parameters=parameters,
                   defaults=method.defaults)


class ModelCard(BaseModel):
    """A shipped model's card (models/zoo/<id>/card.json): architecture, training, metrics, checksums."""

    model_config = ConfigDict(extra="allow")

    id: str
    kind: str
    config: dict[str, Any]
    weights: str
    sha256: str
    parameters: int | None = None
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    engines: dict[str, Any] | None = None


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    status: str = Field(description="'ready', 'warming up', 'failed' or 'disabled'")
    detail: str | None = None
    provider: str | None = Field(None, description="active ONNX Runtime execution provider")
    models: list[str] = Field(default_factory=list, description="models loaded and run once")
