"""DICOMweb at /dicomweb: STOW-RS into the inbox, and the results served back with QIDO-RS search, WADO-RS
retrieve (instances, metadata, frames) and rendered frames, so a DICOMweb viewer (OHIF, say) can read them.

Every route needs a bearer token: STOW-RS the scope ``jobs:submit``, the others ``jobs:read``.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import json
import re
import uuid
from collections.abc import Iterable
from typing import Annotated

import numpy as np
import pydicom
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from recon_service.api import auditing
from recon_service.api.deps import Offset, context_of
from recon_service.api.errors import AUTH_ERRORS, errors
from recon_service.context import ServiceContext
from recon_service.pacs.result_index import STUDY_FILTERS, ResultIndex
from recon_service.security import Principal, require_scope
from recon_service.storage import StorageError, result_file

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
Reader = Annotated[Principal, Depends(require_scope("jobs:read"))]
Submitter = Annotated[Principal, Depends(require_scope("jobs:submit"))]
Context = Annotated[ServiceContext, Depends(context_of)]
DICOM_JSON = "application/dicom+json"
UID = r"^[0-9.]{1,64}$"


def _uid(value: str, what: str) -> str:
    if not re.fullmatch(UID, value):
        raise HTTPException(404, f"no {what} {value[:70]!r}")
    return value


def _element(vr: str, *values) -> dict:  # noqa: ANN002
    present = [v for v in values if v is not None and v != ""]
    if not present:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(v)} for v in present]}
    return {"vr": vr, "Value": list(present)}


def _multipart(parts: Iterable[bytes], media_type: str) -> Response:
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for part in parts:
        body.write(f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode())
        body.write(part)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return Response(body.getvalue(), media_type=f'multipart/related; type="{media_type}"; boundary={boundary}')


# --- STOW-RS ----------------------------------------------------------------------------------------------------

def _dicom_parts(content_type: str, body: bytes) -> list[bytes]:
    """The application/dicom parts of a multipart/related body; HTTPException 415/400 otherwise."""
    kind = content_type.split(";")[0].strip().lower()
    if kind != "multipart/related" or "boundary=" not in content_type:
        raise HTTPException(415, "STOW-RS takes multipart/related; type=\"application/dicom\" with a boundary")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body)
    if not message.is_multipart():
        raise HTTPException(400, "the multipart/related body has no parts")
    parts = []
    for part in message.iter_parts():
        if part.get_content_type() != "application/dicom":
            raise HTTPException(415, f"a part is {part.get_content_type()}; STOW-RS here takes application/dicom")
        parts.append(part.get_payload(decode=True) or b"")
    if not parts:
        raise HTTPException(400, "the multipart/related body has no parts")
    return parts


async def _body(request: Request, limit: int) -> bytes:
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise HTTPException(413, f"the body exceeds RECON_MAX_UPLOAD_MB ({limit // 2**20} MB); nothing was stored")
        chunks.append(chunk)
    return b"".join(chunks)


def _store_all(context: ServiceContext, parts: list[bytes], sender: str) -> dict:
    from recon_service.pacs.inbox import CANNOT_UNDERSTAND, Inbox, read_instance

    inbox = Inbox(context.engine, context.settings.data_dir, context.pacs, context.audit)
    stored, failed = [], []
    for data in parts:
        try:
            ds = read_instance(data)
        except ValueError:
            failed.append({"00081197": _element("US", CANNOT_UNDERSTAND)})
            context.audit.record(f"stow:{sender}"[:128], "dicom.receive", "rejected", None, None, None,
                                 "status 0xC000: not a DICOM Part 10 instance")
            continue
        status = inbox.receive(ds, "stow", sender)
        item = {"00081150": _element("UI", str(ds.get("SOPClassUID", "") or "")),
                "00081155": _element("UI", str(ds.get("SOPInstanceUID", "") or ""))}
        if status == 0:
            stored.append(item)
        else:
            failed.append({**item, "00081197": _element("US", status)})
    answer: dict = {}
    if stored:
        answer["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        answer["00081198"] = {"vr": "SQ", "Value": failed}
    return answer


@router.post("/studies", summary="STOW-RS: store instances",
             description="multipart/related application/dicom instances into the inbox; complete series are routed "
                         "by the inbound rules to jobs. 200: all stored; 202: some refused (FailedSOPSequence with "
                         "the DICOM status); 409: none stored.",
             responses={200: {"content": {DICOM_JSON: {}}}, **errors(400, *AUTH_ERRORS, 404, 409, 413, 415)},
             openapi_extra={auditing.AUDIT_KEY: "dicom.stow"})
async def stow(request: Request, principal: Submitter, context: Context) -> Response:
    inbound = context.pacs.inbound
    if not (inbound.stow and inbound.rules):
        raise HTTPException(404, "STOW-RS is not enabled here (RECON_PACS_CONFIG: inbound.rules, inbound.stow)")
    body = await _body(request, int(context.settings.max_upload_mb * 2**20))
    parts = _dicom_parts(request.headers.get("content-type", ""), body)
    answer = await run_in_threadpool(_store_all, context, parts, principal.name)
    stored = len(answer.get("00081199", {}).get("Value", []))
    failed = len(answer.get("00081198", {}).get("Value", []))
    status = 200 if not failed else 202 if stored else 409
    await auditing.record(request, "dicom.stow", "ok" if stored else "rejected", principal,
                          detail=f"{stored} stored, {failed} refused")
    return Response(json.dumps(answer), status_code=status, media_type=DICOM_JSON)


# --- QIDO-RS ----------------------------------------------------------------------------------------------------

@router.get("/studies", summary="QIDO-RS: search studies",
            description="Studies holding results, matched on StudyInstanceUID, PatientID, PatientName, "
                        "AccessionNumber or StudyDate (a trailing * matches a prefix).",
            responses={200: {"content": {DICOM_JSON: {}}}, **errors(*AUTH_ERRORS, 422)},
            openapi_extra={auditing.AUDIT_KEY: "dicom.search"})
async def search_studies(
    request: Request, principal: Reader, context: Context,
    StudyInstanceUID: Annotated[str | None, Query(max_length=64)] = None,  # noqa: N803 - DICOM keywords
    PatientID: Annotated[str | None, Query(max_length=64)] = None,  # noqa: N803
    PatientName: Annotated[str | None, Query(max_length=64)] = None,  # noqa: N803
    AccessionNumber: Annotated[str | None, Query(max_length=16)] = None,  # noqa: N803
    StudyDate: Annotated[str | None, Query(max_length=8)] = None,  # noqa: N803
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> Response:
    given = {"StudyInstanceUID": StudyInstanceUID, "PatientID": PatientID, "PatientName": PatientName,
             "AccessionNumber": AccessionNumber, "StudyDate": StudyDate}
    filters = {k: v for k, v in given.items() if v is not None and k in STUDY_FILTERS}
    found = await run_in_threadpool(ResultIndex(context.engine).studies, filters, limit, offset)
    base = str(request.base_url).rstrip("/")
    items = [{
        "0020000D": _element("UI", s.study_uid), "00100020": _element("LO", s.patient_id),
        "00100010": _element("PN", s.patient_name), "00080020": _element("DA", s.study_date),
        "00080050": _element("SH", s.accession_number), "00081030": _element("LO", s.study_description),
        "00080061": _element("CS", *s.modalities), "00201206": _element("IS", s.series),
        "00201208": _element("IS", s.instances),
        "00081190": _element("UR", f"{base}/dicomweb/studies/{s.study_uid}")} for s in found]
    await auditing.record(request, "dicom.search", "ok", principal,
                          detail=f"studies {sorted(filters)} returned={len(items)}")
    return Response(json.dumps(items), media_type=DICOM_JSON)


@router.get("/studies/{study}/series", summary="QIDO-RS: the series of a study",
            responses={200: {"content": {DICOM_JSON: {}}}, **errors(*AUTH_ERRORS, 404)},
            openapi_extra={auditing.AUDIT_KEY: "dicom.search"})
async def search_series(study: str, request: Request, principal: Reader, context: Context) -> Response:
    found = await run_in_threadpool(ResultIndex(context.engine).series, _uid(study, "study"))
    if not found:
        raise HTTPException(404, f"no study {study!r} with results")
    base = str(request.base_url).rstrip("/")
    items = [{"0020000D": _element("UI", study), "0020000E": _element("UI", uid), "00080060": _element("CS", modality),
              "0008103E": _element("LO", description), "00200011": _element("IS", number),
              "00201209": _element("IS", count),
              "00081190": _element("UR", f"{base}/dicomweb/studies/{study}/series/{uid}")}
             for uid, modality, description, number, count in found]
    await auditing.record(request, "dicom.search", "ok", principal, study_uid=study, detail=f"series {len(items)}")
    return Response(json.dumps(items), media_type=DICOM_JSON)


@router.get("/studies/{study}/series/{series}/instances", summary="QIDO-RS: the instances of a series",
            responses={200: {"content": {DICOM_JSON: {}}}, **errors(*AUTH_ERRORS, 404)},
            openapi_extra={auditing.AUDIT_KEY: "dicom.search"})
async def search_instances(study: str, series: str, request: Request, principal: Reader,
                           context: Context) -> Response:
    rows = await _instances(context, study, series)
    items = [{"0020000D": _element("UI", r.study_uid), "0020000E": _element("UI", r.series_uid),
              "00080016": _element("UI", r.sop_class_uid), "00080018": _element("UI", r.sop_instance_uid),
              "00200013": _element("IS", r.instance_number)} for r in rows]
    await auditing.record(request, "dicom.search", "ok", principal, study_uid=study, detail=f"instances {len(items)}")
    return Response(json.dumps(items), media_type=DICOM_JSON)


# --- WADO-RS ----------------------------------------------------------------------------------------------------

async def _instances(context: ServiceContext, study: str, series: str | None = None,
                     instance: str | None = None) -> list:
    rows = await run_in_threadpool(ResultIndex(context.engine).instances, _uid(study, "study"),
                                   None if series is None else _uid(series, "series"),
                                   None if instance is None else _uid(instance, "instance"))
    if not rows:
        raise HTTPException(404, "no such " + ("instance" if instance else "series" if series else "study"))
    return rows


def _read(context: ServiceContext, relative: str) -> bytes:
    try:
        return result_file(context.settings.data_dir, relative).read_bytes()
    except (StorageError, OSError) as err:
        raise HTTPException(404, "a result file is missing") from err


def _metadata(context: ServiceContext, rows: list) -> list[dict]:
    out = []
    for row in rows:
        ds = pydicom.dcmread(io.BytesIO(_read(context, row.path)))
        del ds.PixelData
        out.append(ds.to_json_dict())
    return out


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series",
            description="multipart/related; type=\"application/dicom\", one part per instance.",
            responses={200: {"content": {"multipart/related": {}}}, **errors(*AUTH_ERRORS, 404)},
            openapi_extra={auditing.AUDIT_KEY: "dicom.retrieve"})
async def retrieve_series(study: str, series: str, request: Request, principal: Reader, context: Context) -> Response:
    rows = await _instances(context, study, series)
    parts = await run_in_threadpool(lambda: [_read(context, r.path) for r in rows])
    await auditing.record(request, "dicom.retrieve", "ok", principal, rows[0].job_id, study,
                          f"series {series}: {len(rows)} instances")
    return _multipart(parts, "application/dicom")


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: a series' metadata",
            responses={200: {"content": {DICOM_JSON: {}}}, **errors(*AUTH_ERRORS, 404)},
            openapi_extra={auditing.AUDIT_KEY: "dicom.retrieve"})
async def series_metadata(study: str, series: str, request: Request, principal: Reader, context: Context) -> Response:
    rows = await _instances(context, study, series)
    items = await run_in_threadpool(_metadata, context, rows)
    await auditing.record(request, "dicom.retrieve", "ok", principal, rows[0].job_id, study, f"metadata {series}")
    return Response(json.dumps(items), media_type=DICOM_JSON)


@router.get("/studies/{study}/series/{series}/instances/{instance}", summary="WADO-RS: retrieve an instance",
            responses={200: {"content": {"multipart/related": {}}}, **errors(*AUTH_ERRORS, 404)},
            openapi_extra={auditing.AUDIT_KEY: "dicom.retrieve"})
async def retrieve_instance(study: str, series: str, instance: str, request: Request, principal: Reader,
                            context: Context) -> Response:
    [row] = await _instances(context, study, series, instance)
    data = await run_in_threadpool(_read, context, row.path)
    await auditing.record(request, "dicom.retrieve", "ok", principal, row.job_id, study, f"instance {instance}")
    return _multipart([data], "application/dicom")


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame}",
            summary="WADO-RS: an instance's frame (uncompressed pixel data)",
            responses={200: {"content": {"multipart/related": {}}}, **errors(*AUTH_ERRORS, 404)},
            openapi_extra={auditing.AUDIT_KEY: "dicom.retrieve"})
async def retrieve_frame(study: str, series: str, instance: str, frame: int, request: Request, principal: Reader,
                         context: Context) -> Response:
    [row] = await _instances(context, study, series, instance)
    if frame != 1:
        raise HTTPException(404, f"instance {instance} has one frame; no frame {frame}")
    data = await run_in_threadpool(_read, context, row.path)
    pixels = pydicom.dcmread(io.BytesIO(data)).PixelData
    await auditing.record(request, "dicom.retrieve", "ok", principal, row.job_id, study, f"frame {instance}/1")
    return _multipart([pixels], "application/octet-stream")


def _render(data: bytes, media: str) -> bytes:
    from PIL import Image

    ds = pydicom.dcmread(io.BytesIO(data))
    image = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(
        ds.get("RescaleIntercept", 0) or 0)
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        low, high = center - width / 2, center + width / 2
    else:
        low, high = float(image.min()), float(image.max())
    scaled = np.clip((image - low) / max(high - low, 1e-9), 0, 1) * 255
    out = io.BytesIO()
    Image.fromarray(np.round(scaled).astype(np.uint8)).save(out, format="PNG" if media == "image/png" else "JPEG")
    return out.getvalue()


def _rendered_type(request: Request) -> str:
    accept = request.headers.get("accept", "image/png")
    for media in ("image/png", "image/jpeg"):
        if media in accept:
            return media
    if "*/*" in accept or "image/*" in accept or not accept.strip():
        return "image/png"
    raise HTTPException(406, "rendered frames are image/png or image/jpeg")


@router.get("/studies/{study}/series/{series}/instances/{instance}/rendered",
            summary="WADO-RS: an instance rendered (PNG or JPEG, in its window)",
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **errors(*AUTH_ERRORS, 404, 406)},
            openapi_extra={auditing.AUDIT_KEY: "dicom.retrieve"})
async def rendered_instance(study: str, series: str, instance: str, request: Request, principal: Reader,
                            context: Context) -> Response:
    return await _rendered(study, series, instance, request, principal, context)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered",
            summary="WADO-RS: a frame rendered (PNG or JPEG, in its window)",
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **errors(*AUTH_ERRORS, 404, 406)},
            openapi_extra={auditing.AUDIT_KEY: "dicom.retrieve"})
async def rendered_frame(study: str, series: str, instance: str, frame: int, request: Request, principal: Reader,
                         context: Context) -> Response:
    if frame != 1:
        raise HTTPException(404, f"instance {instance} has one frame; no frame {frame}")
    return await _rendered(study, series, instance, request, principal, context)


async def _rendered(study: str, series: str, instance: str, request: Request, principal: Principal,
                    context: ServiceContext) -> Response:
    media = _rendered_type(request)
    [row] = await _instances(context, study, series, instance)
    data = await run_in_threadpool(_read, context, row.path)
    image = await run_in_threadpool(_render, data, media)
    await auditing.record(request, "dicom.retrieve", "ok", principal, row.job_id, study, f"rendered {instance}")
    return Response(image, media_type=media)
