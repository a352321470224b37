"""Start-up recovery: after a crash or kill -9, every unfinished job is re-queued or failed with a reason.

Run it once, before any worker starts (a running job found then belongs to a process that is gone). Inputs
of queued and running jobs are checked against the size and SHA-256 recorded at upload, so a job never
runs on a truncated or replaced file.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

from recon_service.context import ServiceContext
from recon_service.jobs.results import RESULTS_DIR
from recon_service.jobs.store import InputRecord, JobRecord, JobState

LOG = logging.getLogger(__name__)

_PAGE = 500


def input_intact(data_dir: Path, record: InputRecord) -> bool:
    """Whether a stored input is inside ``data_dir``, present, and of the recorded size and checksum."""
    root = Path(data_dir).resolve()
    path = (root / record.path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return False
    if path.stat().st_size != record.size:
        return False
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest() == record.sha256


def _unfinished(context: ServiceContext) -> list[JobRecord]:
    jobs: list[JobRecord] = []
    for state in (JobState.QUEUED, JobState.RUNNING):
        offset = 0
        while page := context.store.list(state=state.value, limit=_PAGE, offset=offset):
            jobs.extend(page)
            offset += len(page)
    return jobs


def remove_partial_results(data_dir: Path) -> int:
    """Delete result folders a killed process was still writing, ``results/.<job_id>.partial-<pid>``: a worker's
    (``jobs.results.write_results``) or the submitter's for a job run remotely (``executors.task.publish_files``);
    the glob also takes the ``.<job_id>.partial`` that earlier versions of the latter left."""
    removed = 0
    for partial in (Path(data_dir) / RESULTS_DIR).glob(".*.partial*"):
        if partial.is_dir() and not partial.is_symlink():
            shutil.rmtree(partial)
            removed += 1
    return removed


def recover_jobs(context: ServiceContext) -> list[tuple[str, str]]:
    """Check the inputs of queued and running jobs, then let the store re-queue or fail the jobs that were
    running (and fail queued ones whose inputs are gone). Returns ``(job_id, new_state)`` pairs."""
    settings = context.settings
    if removed := remove_partial_results(settings.data_dir):
        LOG.info("recovery: removed %d partly written result folders", removed)
    missing = {job.id for job in _unfinished(context)
               if not all(input_intact(settings.data_dir, record) for record in job.inputs)}
    outcomes = context.store.recover(settings.max_attempts, missing)
    for job_id, state in outcomes:
        if state == JobState.QUEUED:
            LOG.info("recovery: job %s re-queued", job_id)
        else:
            why = " (input missing or corrupt)" if job_id in missing else ""
            LOG.warning("recovery: job %s %s%s", job_id, state, why)
    if not outcomes:
        LOG.info("recovery: no interrupted jobs")
    return outcomes
