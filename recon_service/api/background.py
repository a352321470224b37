"""Crash recovery and the job worker processes, started with the app and stopped with it.

Both live in ``recon_service.jobs`` (``recovery.recover_jobs`` and ``worker.WorkerPool``) and are imported
lazily here, so the API stays importable where the worker side is not installed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from recon_service.context import ServiceContext

LOG = logging.getLogger(__name__)
_WORKER_MODULES = ("recon_service.jobs.recovery", "recon_service.jobs.worker")


@dataclass
class BackgroundHandle:
    """What :func:`start_background` started; ``stop()`` ends the worker processes."""

    pool: Any | None = None
    recovered: Any = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.pool is not None

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()
            self.pool = None


def start_background(context: ServiceContext) -> BackgroundHandle:
    """Account for the jobs a previous run left behind (re-queue or fail them), then start the workers."""
    try:
        from recon_service.jobs.recovery import recover_jobs
        from recon_service.jobs.worker import WorkerPool
    except ModuleNotFoundError as err:
        if err.name not in _WORKER_MODULES:
            raise
        # TODO(merge): the worker branch provides both modules; remove this guard when merged
        LOG.warning("job workers not started: module %s is missing in this build; submitted jobs stay queued",
                    err.name)
        return BackgroundHandle()
    recovered = recover_jobs(context)
    pool = WorkerPool(context.settings)
    pool.start()
    LOG.info("started %d job worker process(es)", context.settings.workers)
    return BackgroundHandle(pool, recovered)
