"""Executors: where reconstructions run. One interface (``base.Executor``), two implementations: worker processes
on this machine (``local.LocalExecutor``, the default) and Ray actors on a cluster (``ray_cluster.RayExecutor``).
The batch command and, with ``RECON_EXECUTOR=ray``, the service's job workers drive them."""

from __future__ import annotations

from recon_service.executors.base import Event, Executor, ExecutorError, Finished, Lost, Progress, Started
from recon_service.executors.task import Outcome, Task

EXECUTORS = ("local", "ray")


def make_executor(kind: str, workers: int, *, address: str | None = None, gpus: float = 0.0,
                  threads: int | None = None) -> Executor:
    """A ``kind`` executor ("local" or "ray") of ``workers`` workers; ``address`` and ``gpus`` (per worker) are
    Ray's (local workers use the devices a job's parameters name)."""
    if kind == "local":
        if address:
            raise ExecutorError("--address is a Ray cluster's; the local executor runs on this machine")
        from recon_service.executors.local import LocalExecutor

        return LocalExecutor(workers, threads)
    if kind == "ray":
        from recon_service.executors.ray_cluster import RayExecutor

        return RayExecutor(workers, address=address, gpus=gpus, threads=threads)
    raise ExecutorError(f"unknown executor {kind!r}; known: {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "Event", "Executor", "ExecutorError", "Finished", "Lost", "Outcome", "Progress", "Started",
           "Task", "make_executor"]
