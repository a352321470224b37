"""/v1/audit: the append-only audit log (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from recon_service.api import auditing
from recon_service.api.deps import Offset, context_of
from recon_service.api.errors import AUTH_ERRORS, errors
from recon_service.audit import AuditEntry
from recon_service.context import ServiceContext
from recon_service.security import Principal, require_scope

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit", response_model=list[AuditEntry], summary="List audit entries",
            description="Newest first: who did what to which job or study, when, from where, and how it ended "
                        "(refused attempts included).",
            responses=errors(*AUTH_ERRORS, 422), openapi_extra={auditing.AUDIT_KEY: "audit.read"})
async def audit_entries(
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("admin"))],
    context: Annotated[ServiceContext, Depends(context_of)],
    job_id: Annotated[str | None, Query(max_length=32, description="only entries about this job")] = None,
    actor: Annotated[str | None, Query(max_length=128, description="only entries of this token name")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> list[AuditEntry]:
    entries = await run_in_threadpool(context.audit.entries, job_id, actor, limit, offset)
    await auditing.record(request, "audit.read", "ok", principal, detail=f"returned {len(entries)}")
    return entries
