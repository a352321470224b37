"""The warm-up state behind /readyz: the service is ready once the shipped models loaded and ran once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from recon_service.api.schemas import Readiness
from recon_service.settings import Settings

LOG = logging.getLogger(__name__)


class WarmUp:
    """Runs ``warm_up(settings)`` in a thread and keeps what it reported (or why it failed)."""

    def __init__(self) -> None:
        self.status = "warming up"
        self.detail: str | None = None
        self.provider: str | None = None
        self.models: list[str] = []

    @property
    def ready(self) -> bool:
        return self.status in ("ready", "disabled")

    async def run(self, settings: Settings, warm_up: Callable[[Settings], dict[str, Any]] | None = None) -> None:
        if not settings.warmup:
            self.status, self.detail = "disabled", "warm-up is off (RECON_WARMUP=false)"
            return
        if warm_up is None:
            from recon_service.jobs.warmup import warm_up
        try:
            info = await asyncio.to_thread(warm_up, settings)
        except Exception as err:  # any failure keeps the service unready, with the reason
            LOG.error("warm-up failed: %s", err)
            self.status, self.detail = "failed", f"warm-up failed: {err}"
            return
        # {model_id: engine provider}; the provider is the same for every model of one process
        self.models = list(info)
        first = next(iter(info.values()), None)
        self.provider = first.removeprefix("onnxruntime:") if first else None
        self.status, self.detail = "ready", None
        LOG.info("warm-up finished: %d model(s) on %s", len(self.models), self.provider)

    def report(self) -> Readiness:
        return Readiness(ready=self.ready, status=self.status, detail=self.detail, provider=self.provider,
                         models=self.models)
