"""Documented error responses for the OpenAPI document (every error body is ``{"detail": ...}``)."""

from __future__ import annotations

from typing import Any

from recon_service.api.schemas import ErrorResponse

_DESCRIPTIONS = {
    400: "Malformed request body (e.g. a broken multipart stream).",
    401: "No bearer token, or a token that is not valid (see the WWW-Authenticate header).",
    403: "The token is valid but lacks the scope this route needs.",
    404: "No such job, or the job has no result in this format.",
    406: "The Accept header asks for a media type this route cannot give (rendered: image/png or image/jpeg).",
    409: "The job is in a state that does not allow this (finished, or not yet succeeded).",
    413: "The uploaded files exceed RECON_MAX_UPLOAD_MB; nothing was stored.",
    415: "The body is not multipart/form-data, or a file is neither HDF5 raw data nor DICOM.",
    422: "Invalid input; 'detail' names the field or file part and the problem. Nothing was stored.",
    502: "A PACS the request needs (a study lookup) could not be reached; retry later.",
    503: "The job queue is full; retry after the Retry-After seconds.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the given status codes."""
    out: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in codes}
    if 503 in out:
        out[503]["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
    return out


AUTH_ERRORS = (401, 403)
