"""Jobs: the persistent store (the queue is the ``jobs`` table), worker processes and the job runner."""

from recon_service.jobs.store import (
    FINAL_STATES,
    JobConflict,
    JobRecord,
    JobState,
    JobStore,
    NewInput,
    QueueFull,
)

__all__ = ["FINAL_STATES", "JobConflict", "JobRecord", "JobState", "JobStore", "NewInput", "QueueFull"]
