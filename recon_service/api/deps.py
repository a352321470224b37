"""Shared FastAPI dependencies and query parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request

from recon_service.context import ServiceContext


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
