"""The HTTP API (FastAPI): ``create_app(settings)``; run it with ``recon serve``."""

from recon_service.api.app import create_app

__all__ = ["create_app"]
