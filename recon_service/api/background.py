"""Crash recovery, the job worker processes, the PACS outbox sender and the DICOM inbox (router and C-STORE SCP),
started with the app and stopped with it.

They live in ``recon_service.jobs`` (``recovery.recover_jobs`` and ``worker.WorkerPool``) and
``recon_service.pacs`` (``outbox.OutboxRunner``, ``inbox.InboxRouter``, ``scp.StorageSCP``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from recon_service.context import ServiceContext

LOG = logging.getLogger(__name__)


@dataclass
class BackgroundHandle:
    """What :func:`start_background` started; ``stop()`` ends the worker processes."""

    pool: Any | None = None
    recovered: Any = field(default_factory=list)
    outbox: Any | None = None
    inbound: Any | None = None

    @property
    def running(self) -> bool:
        return self.pool is not None

    def workers_alive(self) -> int:
        return 0 if self.pool is None else self.pool.alive()

    def workers_ready(self) -> int:
        """Workers running and warmed up."""
        return 0 if self.pool is None else self.pool.ready()

    def stop(self) -> None:
        if self.inbound is not None:
            self.inbound.stop()
            self.inbound = None
        if self.outbox is not None:
            self.outbox.stop()
            self.outbox = None
        if self.pool is not None:
            self.pool.stop()
            self.pool = None


def start_background(context: ServiceContext) -> BackgroundHandle:
    """Account for the jobs a previous run left behind (re-queue or fail them), then start the workers."""
    if not context.settings.run_workers:
        LOG.info("API-only node (RECON_RUN_WORKERS=false): no job workers and no crash recovery in this process")
        return BackgroundHandle()
    from recon_service.jobs.recovery import recover_jobs
    from recon_service.jobs.worker import WorkerPool
    from recon_service.pacs.node import start_inbound, start_outbox_runner

    recovered = recover_jobs(context)
    pool = WorkerPool(context.settings)
    pool.start()
    LOG.info("started %d job worker process(es)", context.settings.workers)
    return BackgroundHandle(pool, recovered, start_outbox_runner(context), start_inbound(context))

