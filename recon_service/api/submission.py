"""Accepting a job: stream the files to disk, check the form and the files, then commit the job row.

Order matters for crash safety: the uploads are complete and fsynced before the job row is committed, and
the row is committed before the client hears 202. A submission refused at any step leaves nothing on disk.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from pipelines.reconstructors import ParamError
from recon_service.api.uploads import FormError, FormReceiver
from recon_service.context import ServiceContext
from recon_service.jobs.catalog import PipelineInfo, get_pipeline
from recon_service.jobs.inputs import RejectedInput, check_submission
from recon_service.jobs.runner import service_params
from recon_service.jobs.store import JobRecord, QueueFull
from recon_service.security.principal import Principal
from recon_service.settings import Settings
from recon_service.storage import StorageError, UploadArea, UploadTooLarge

LOG = logging.getLogger(__name__)
RETRY_AFTER_S = 30


def parse_json_object(text: str | None, name: str) -> dict[str, Any]:
    """A form field holding a JSON object (absent or blank: empty)."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise HTTPException(422, f"form field {name!r} is not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise HTTPException(422, f"form field {name!r} must be a JSON object, not {type(value).__name__}")
    return value


def check_params(pipeline: PipelineInfo, params: dict[str, Any], settings: Settings) -> None:
    """The method's parameter check (a wrong type, a value out of range, an unknown choice or key: 422 naming
    the parameter and what it allows, in the words the CLI uses), on the parameters as the worker will run
    them (with the service's engine and provider choices), so nothing accepted here fails later on them."""
    try:
        pipeline.check(service_params(settings, pipeline, params))
    except ParamError as err:
        raise HTTPException(422, f"pipeline {pipeline.name!r}: {err}") from err


def pipeline_of(name: str | None) -> PipelineInfo:
    if not name or not name.strip():
        raise HTTPException(422, "form field 'pipeline' is required (see GET /v1/pipelines)")
    try:
        return get_pipeline(name.strip())
    except KeyError as err:
        raise HTTPException(422, str(err.args[0])) from err


def looked_up_study(context: ServiceContext, lookup: dict[str, Any]) -> dict[str, str]:
    """The patient and study attributes of the study a ``study_lookup`` form field names, from the PACS it names
    (``source``) or the configured lookup source. 422 for a bad request or no such study, 502 when the PACS
    cannot be asked."""
    from recon_service.pacs.lookup import LookupUnavailable, StudyNotFound, lookup_key, lookup_study

    config = context.pacs
    try:
        keyword, value = lookup_key(lookup)
    except ValueError as err:
        raise HTTPException(422, f"form field 'study_lookup': {err}") from err
    source = lookup.get("source", config.study_lookup)
    if source is None:
        raise HTTPException(422, "form field 'study_lookup': name a 'source' (no study_lookup source is configured)")
    try:
        destination = config.destination(str(source))
    except KeyError as err:
        raise HTTPException(422, f"form field 'study_lookup': {err.args[0]}") from err
    try:
        return lookup_study(destination, keyword, value)
    except StudyNotFound as err:
        raise HTTPException(422, f"form field 'study_lookup': {err} in {source!r}") from err
    except LookupUnavailable as err:
        raise HTTPException(502, f"study lookup in {source!r} failed: {err}; retry later") from err


async def _drain(request: Request) -> None:
    async for _ in request.stream():
        pass


async def submit(request: Request, context: ServiceContext, principal: Principal,
                 idempotency_key: str | None) -> tuple[JobRecord, bool]:
    """Store and check a submission, then queue its job. Returns ``(job, created)``; a repeated
    ``idempotency_key`` of the same token returns the existing job with ``created=False``.

    Raises HTTPException (400/413/415/422/503) with a detail naming the problem."""
    store, settings = context.store, context.settings
    if idempotency_key is not None:
        existing = await run_in_threadpool(store.find_by_idempotency_key, principal.name, idempotency_key)
        if existing is not None:
            await _drain(request)
            return existing, False
    job_id = uuid.uuid4().hex
    area = UploadArea(settings.data_dir, job_id, int(settings.max_upload_mb * 2**20))
    accepted = False
    try:
        receiver = FormReceiver(area)
        try:
            await receiver.receive(request)
        except FormError as err:
            raise HTTPException(err.status, err.message) from err
        except UploadTooLarge as err:
            raise HTTPException(413, str(err)) from err
        except StorageError as err:
            raise HTTPException(422, str(err)) from err
        pipeline = pipeline_of(receiver.fields.get("pipeline"))
        params = parse_json_object(receiver.fields.get("params"), "params")
        check_params(pipeline, params, settings)
        study = parse_json_object(receiver.fields.get("study"), "study")
        lookup = parse_json_object(receiver.fields.get("study_lookup"), "study_lookup")
        if lookup:
            found = await run_in_threadpool(looked_up_study, context, lookup)
            study = {**found, **study}  # what the request states wins over what the PACS holds
        try:
            checked = await run_in_threadpool(check_submission, pipeline, area.files, study)
        except RejectedInput as err:
            raise HTTPException(415 if err.unsupported else 422, str(err)) from err
        area.sync()
        try:
            job, created = await run_in_threadpool(
                store.create, pipeline.name, checked.inputs, principal.name, params, checked.study, idempotency_key,
                settings.queue_size, job_id)
        except QueueFull as err:
            raise HTTPException(503, f"{err}; retry later", headers={"Retry-After": str(RETRY_AFTER_S)}) from err
        accepted = created
        if created:
            LOG.info("job %s queued (pipeline %s, %d file(s))", job.id, job.pipeline, len(checked.inputs))
        return job, created
    except HTTPException as err:
        LOG.info("submission refused (HTTP %d)", err.status_code)
        raise
    finally:
        if not accepted:
            await run_in_threadpool(area.discard)
