"""Shared FastAPI dependencies."""

from __future__ import annotations

from fastapi import Request

from recon_service.context import ServiceContext


def context_of(request: Request) -> ServiceContext:
    """The app's :class:`ServiceContext` (built by the lifespan)."""
    return request.app.state.context
