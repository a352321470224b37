"""Audit entries for the patient-data routes, including refused attempts.

A route names its audit action in ``openapi_extra={"x-audit-action": ...}`` (so the OpenAPI document also
shows which routes are audited). Successful calls record their entry in the route; every HTTP error on such
a route (401, 403, 404, 409, 413, 422, ...) is recorded here by the app's exception handlers, with the
principal when authentication got that far.
"""

from __future__ import annotations

import logging
import re

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from recon_service.security.principal import Principal

LOG = logging.getLogger(__name__)
AUDIT_KEY = "x-audit-action"
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def audit_action(request: Request) -> str | None:
    route = request.scope.get("route")
    extra = getattr(route, "openapi_extra", None) or {}
    return extra.get(AUDIT_KEY)


def client_of(request: Request) -> str | None:
    return request.client.host[:128] if request.client else None


def outcome_for(status: int) -> str:
    if status < 400:
        return "ok"
    return {401: "unauthenticated", 403: "forbidden", 404: "not-found", 409: "conflict", 413: "rejected",
            415: "rejected", 422: "rejected",
            502: "unavailable", 503: "unavailable"}.get(status, "error" if status >= 500 else "rejected")


async def record(request: Request, action: str, outcome: str, principal: Principal | None = None,
                 job_id: str | None = None, study_uid: str | None = None, detail: str | None = None) -> None:
    """Append an audit entry (off the event loop); names and ids are cut to the column sizes."""
    if principal is None:
        principal = getattr(request.state, "principal", None)
    actor = principal.name if principal is not None else "anonymous"
    if job_id is not None and not _JOB_ID.fullmatch(job_id):
        detail = f"job id {job_id[:64]!r}" + (f"; {detail}" if detail else "")
        job_id = None
    audit = request.app.state.context.audit
    await run_in_threadpool(audit.record, actor[:128], action[:64], outcome[:32], job_id,
                            study_uid[:64] if isinstance(study_uid, str) else None, client_of(request),
                            detail[:2000] if detail else None)


async def _record_refusal(request: Request, status: int, detail: object) -> None:
    action = audit_action(request)
    if action is None:
        return
    try:
        await record(request, action, outcome_for(status), job_id=request.path_params.get("job_id"),
                     detail=f"HTTP {status}: {detail}")
    except Exception:  # the refusal is answered even if auditing it failed; the failure is logged
        LOG.exception("could not write the audit entry for a refused %s", action)


async def audited_http_exception(request: Request, exc: StarletteHTTPException) -> Response:
    await _record_refusal(request, exc.status_code, exc.detail)
    return await http_exception_handler(request, exc)


async def audited_validation_error(request: Request, exc: RequestValidationError) -> Response:
    problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
    await _record_refusal(request, 422, problems)
    return await request_validation_exception_handler(request, exc)
