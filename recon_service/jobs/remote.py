"""Running a service job on an executor's worker (``RECON_EXECUTOR=ray``) instead of in the job worker itself.

The job worker still claims the job, reports its progress, honours cancellation and records how it ended; only
the reconstruction moves: the raw input goes to the executor's worker (through Ray's object store), the worker
runs the same ``runner.run_job``, and the result files come back and are published under
``DATA_DIR/results/<job id>/`` as a local run would have written them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from recon_service.executors.base import Executor, Finished, Lost, Progress
from recon_service.executors.task import Task, publish_files
from recon_service.jobs.catalog import get_pipeline
from recon_service.jobs.results import results_dir
from recon_service.jobs.runner import RECON_END, JobCancelled, JobFailed, ProgressFn, input_path, raw_input
from recon_service.jobs.store import JobRecord
from recon_service.settings import Settings

EVENT_WAIT_S = 0.5


class WorkerLost(Exception):
    """The executor's worker died while running the job; the job is settled as for a dead job worker."""


def run_job_on(executor: Executor, settings: Settings, job: JobRecord, progress: ProgressFn) -> dict[str, Any]:
    """``runner.run_job`` for ``job`` on ``executor`` (which runs one task at a time for this job worker)."""
    try:
        info = get_pipeline(job.pipeline)
    except KeyError:
        raise JobFailed(f"unknown pipeline {job.pipeline!r}") from None
    record = raw_input(info, job)
    path = input_path(settings.data_dir, record)
    if not path.is_file():
        raise JobFailed(f"input {record.filename!r}: the stored file is missing; resubmit the job")
    task = Task(job.id, dataclasses.replace(job, inputs=(record,)), path, settings.providers, review_panes=True)
    executor.submit(task)
    cancelled = False
    while True:
        for event in executor.events(EVENT_WAIT_S):
            if isinstance(event, Progress) and not cancelled:
                try:
                    progress(event.fraction, event.step)
                except JobCancelled:
                    cancelled = True
                    executor.cancel(job.id)
            elif isinstance(event, Lost):
                raise WorkerLost(event.reason)
            elif isinstance(event, Finished):
                outcome = event.outcome
                if outcome.status == "cancelled" or cancelled:
                    raise JobCancelled()
                if outcome.status == "failed":
                    raise JobFailed(outcome.reason or "failed on its worker")
                progress(RECON_END, "writing results")  # here, as on a local worker: a cancellation stops it
                publish_files(outcome.files, results_dir(settings.data_dir, job.id))
                result = outcome.result or {}
                result.setdefault("provenance", {})["executor_worker"] = event.worker  # where it ran: host:pid
                return result
