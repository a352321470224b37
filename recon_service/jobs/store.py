"""The job store: every state change of a job is one short transaction on the ``jobs`` table.

The table is the queue. A worker takes the oldest queued job with a conditional update
(``state='queued' -> 'running'``), so two workers never run the same job, in SQLite and PostgreSQL alike.
Callers get :class:`JobRecord` snapshots, never live ORM objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from recon_service.db.schema import Job, JobInput


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class JobConflict(Exception):
    """The job is not in a state that allows the request (e.g. cancelling a finished job)."""


class QueueFull(Exception):
    """The bounded queue is full; the client should retry later."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything stored is UTC
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def result_flags(result: dict[str, Any] | None) -> list[str]:
    """The out-of-distribution reasons of a job result (``run_job``'s), empty when it is not flagged."""
    report = ((result or {}).get("provenance") or {}).get("consistency_report") or {}
    return [str(r) for r in report.get("reasons") or []] if report.get("flagged") else []


@dataclass(frozen=True)
class NewInput:
    """An uploaded file already stored durably under the data directory (``path`` is relative to it)."""

    filename: str
    path: str
    size: int
    sha256: str
    kind: str


@dataclass(frozen=True)
class InputRecord(NewInput):
    position: int = 0


@dataclass(frozen=True)
class JobRecord:
    id: str
    pipeline: str
    params: dict[str, Any]
    study: dict[str, Any]
    state: JobState
    progress: float
    step: str | None
    error: str | None
    owner: str
    idempotency_key: str | None
    attempts: int
    worker: str | None
    cancel_requested: bool
    result: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    inputs: tuple[InputRecord, ...] = field(default_factory=tuple)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def study_uid(self) -> str | None:
        """The StudyInstanceUID the job's study names, if it names one (what audit entries record)."""
        uid = self.study.get("StudyInstanceUID")
        return uid if isinstance(uid, str) else None

    @property
    def flags(self) -> list[str]:
        """Why the learned image is out of distribution (its consistency report's reasons); empty when it is not
        flagged (or not learned)."""
        return result_flags(self.result)

    @classmethod
    def of(cls, job: Job) -> JobRecord:
        return cls(
            id=job.id, pipeline=job.pipeline, params=dict(job.params or {}), study=dict(job.study or {}),
            state=JobState(job.state), progress=job.progress, step=job.step, error=job.error, owner=job.owner,
            idempotency_key=job.idempotency_key, attempts=job.attempts, worker=job.worker,
            cancel_requested=job.cancel_requested, result=job.result, created_at=_aware(job.created_at),
            started_at=_aware(job.started_at), finished_at=_aware(job.finished_at),
            heartbeat_at=_aware(job.heartbeat_at),
            inputs=tuple(InputRecord(i.filename, i.path, i.size, i.sha256, i.kind, i.position) for i in job.inputs),
        )


class JobStore:
    """Create, find, claim, update and finish jobs. Thread- and process-safe through the database."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # --- submission -------------------------------------------------------------------------------------

    def create(self, pipeline: str, inputs: list[NewInput], owner: str, params: dict[str, Any] | None = None,
               study: dict[str, Any] | None = None, idempotency_key: str | None = None,
               queue_limit: int | None = None, job_id: str | None = None) -> tuple[JobRecord, bool]:
        """Queue a job; returns ``(job, created)``. A repeated ``idempotency_key`` of the same owner returns
        the existing job with ``created=False``. Raises :class:`QueueFull` when ``queue_limit`` jobs wait."""
        if idempotency_key is not None:
            existing = self.find_by_idempotency_key(owner, idempotency_key)
            if existing is not None:
                return existing, False
        with self._session() as session:
            if queue_limit is not None and self._count(session, JobState.QUEUED) >= queue_limit:
                raise QueueFull(f"{queue_limit} jobs are already queued")
            job = Job(id=job_id or uuid.uuid4().hex, pipeline=pipeline, params=params or {}, study=study or {},
                      state=JobState.QUEUED.value, progress=0.0, owner=owner, idempotency_key=idempotency_key,
                      attempts=0, cancel_requested=False, created_at=utcnow())
            job.inputs = [JobInput(position=i, filename=f.filename, path=f.path, size=f.size, sha256=f.sha256,
                                   kind=f.kind) for i, f in enumerate(inputs)]
            session.add(job)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                if idempotency_key is None:
                    raise
                existing = self.find_by_idempotency_key(owner, idempotency_key)
                if existing is None:
                    raise
                return existing, False
            return self._record(session, job.id), True

    def find_by_idempotency_key(self, owner: str, key: str) -> JobRecord | None:
        with self._session() as session:
            job_id = session.scalar(select(Job.id).where(Job.owner == owner, Job.idempotency_key == key))
            return None if job_id is None else self._record(session, job_id)

    # --- reading ----------------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        with self._session() as session:
            return self._record(session, job_id)

    def list(self, state: str | None = None, pipeline: str | None = None, owner: str | None = None,
             limit: int = 50, offset: int = 0) -> list[JobRecord]:
        """Newest first, filtered by state, pipeline and owner."""
        query = select(Job).options(selectinload(Job.inputs)).order_by(Job.created_at.desc(), Job.id)
        if state is not None:
            query = query.where(Job.state == state)
        if pipeline is not None:
            query = query.where(Job.pipeline == pipeline)
        if owner is not None:
            query = query.where(Job.owner == owner)
        with self._session() as session:
            return [JobRecord.of(job) for job in session.scalars(query.limit(limit).offset(offset))]

    def count_by_state(self) -> dict[str, int]:
        with self._session() as session:
            rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        counts = {state.value: 0 for state in JobState}
        counts.update({state: n for state, n in rows})
        return counts

    @staticmethod
    def _count(session: Session, state: JobState) -> int:
        return session.scalar(select(func.count()).select_from(Job).where(Job.state == state.value)) or 0

    @staticmethod
    def _record(session: Session, job_id: str) -> JobRecord | None:
        job = session.scalar(select(Job).options(selectinload(Job.inputs)).where(Job.id == job_id))
        return None if job is None else JobRecord.of(job)

    # --- workers ----------------------------------------------------------------------------------------

    def claim_next(self, worker: str) -> JobRecord | None:
        """Move the oldest queued job to running for ``worker``; None when nothing waits."""
        with self._session() as session:
            while True:
                job_id = session.scalar(select(Job.id).where(Job.state == JobState.QUEUED.value)
                                        .order_by(Job.created_at, Job.id).limit(1))
                if job_id is None:
                    return None
                now = utcnow()
                claimed = session.execute(
                    update(Job).where(Job.id == job_id, Job.state == JobState.QUEUED.value)
                    .values(state=JobState.RUNNING.value, worker=worker, started_at=now, heartbeat_at=now,
                            attempts=Job.attempts + 1, progress=0.0, step="starting", error=None)
                ).rowcount
                session.commit()
                if claimed:
                    return self._record(session, job_id)

    def set_progress(self, job_id: str, progress: float, step: str | None = None) -> bool:
        """Record progress of a running job; returns whether a cancellation was requested."""
        with self._session() as session:
            session.execute(update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING.value)
                            .values(progress=min(max(float(progress), 0.0), 1.0), step=step,
                                    heartbeat_at=utcnow()))
            session.commit()
            return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def finish(self, job_id: str, state: JobState, error: str | None = None,
               result: dict[str, Any] | None = None, worker: str | None = None,
               also: Callable[[Session], None] | None = None) -> JobRecord | None:
        """End a running job as succeeded, failed or cancelled (with ``worker``: only while that worker runs it).

        ``also`` adds rows in the same transaction when the job did end here (the PACS outbox's deliveries of a
        succeeded job), so a crash cannot leave a finished job without them."""
        if state not in FINAL_STATES:
            raise ValueError(f"{state} is not a final state")
        with self._session() as session:
            now = utcnow()
            started = session.scalar(select(Job.started_at).where(Job.id == job_id))
            values: dict[str, Any] = dict(state=state.value, error=error, finished_at=now, result=result,
                                          run_seconds=_run_seconds(started, now))
            if state == JobState.SUCCEEDED:
                values.update(progress=1.0, step="done")
            elif state == JobState.CANCELLED:
                values.update(step="cancelled")
            running = [Job.id == job_id, Job.state == JobState.RUNNING.value]
            if worker is not None:
                running.append(Job.worker == worker)
            ended = session.execute(update(Job).where(*running).values(**values)).rowcount
            if ended and also is not None:
                also(session)
            session.commit()
            return self._record(session, job_id)

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job at once; ask a running one to stop (its worker ends it as cancelled).

        Raises KeyError for an unknown job and :class:`JobConflict` for a finished one."""
        with self._session() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise KeyError(job_id)
            if job.state in FINAL_STATES:
                raise JobConflict(f"job {job_id} has already {job.state}")
            cancelled = session.execute(
                update(Job).where(Job.id == job_id, Job.state == JobState.QUEUED.value)
                .values(state=JobState.CANCELLED.value, finished_at=utcnow(), step="cancelled",
                        cancel_requested=True)).rowcount
            if not cancelled:
                session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
            session.commit()
            return self._record(session, job_id)

    def recover(self, max_attempts: int, missing_inputs: set[str] | None = None) -> list[tuple[str, str]]:
        """After a restart, account for every job that was running when the service died.

        Jobs whose inputs are intact and that have runs left go back to the queue; the others fail with the
        reason. ``missing_inputs`` holds ids of jobs whose stored inputs are gone or corrupt. Returns
        ``(job_id, new_state)`` pairs."""
        missing_inputs = missing_inputs or set()
        outcomes = []
        with self._session() as session:
            running = session.scalars(select(Job).where(Job.state == JobState.RUNNING.value)).all()
            for job in running:
                _settle_interrupted(job, max_attempts, job.id in missing_inputs, "the service stopped during this job")
                outcomes.append((job.id, job.state))
            for job in session.scalars(select(Job).where(Job.state == JobState.QUEUED.value,
                                                         Job.id.in_(missing_inputs))).all():
                job.state, job.finished_at = JobState.FAILED.value, utcnow()
                job.error = "the stored input of this queued job is missing or corrupt"
                outcomes.append((job.id, job.state))
            session.commit()
        return outcomes

    def stalled(self, workers: list[str], seconds: float) -> list[JobRecord]:
        """Running jobs of these workers whose last heartbeat (claim or progress) is older than ``seconds``."""
        if not workers:
            return []
        limit = utcnow() - timedelta(seconds=seconds)
        with self._session() as session:
            jobs = session.scalars(select(Job).where(Job.state == JobState.RUNNING.value, Job.worker.in_(workers),
                                                     Job.heartbeat_at < limit)).all()
            return [JobRecord.of(j) for j in jobs]

    def overdue(self, workers: list[str], limit_for: Callable[[str], float]) -> list[tuple[JobRecord, float]]:
        """Running jobs of these workers whose run started more than their pipeline's limit ago (``limit_for``
        gives the seconds of a pipeline, 0 for none), each with its limit."""
        if not workers:
            return []
        now = utcnow()
        with self._session() as session:
            jobs = session.scalars(select(Job).where(Job.state == JobState.RUNNING.value,
                                                     Job.worker.in_(workers))).all()
            found = []
            for job in jobs:
                limit = limit_for(job.pipeline)
                if limit > 0 and job.started_at is not None and (now - _aware(job.started_at)).total_seconds() > limit:
                    found.append((JobRecord.of(job), limit))
            return found

    def recover_worker(self, worker: str, max_attempts: int, cause: str = "the worker process running this job died"
                       ) -> list[tuple[str, str]]:
        """Account for the running jobs of one worker process that died while the service kept running
        (killed for memory, crashed): re-queued while runs are left, failed with the reason otherwise."""
        outcomes = []
        with self._session() as session:
            for job in session.scalars(select(Job).where(Job.state == JobState.RUNNING.value,
                                                         Job.worker == worker)).all():
                _settle_interrupted(job, max_attempts, False, cause)
                outcomes.append((job.id, job.state))
            session.commit()
        return outcomes


def _settle_interrupted(job: Job, max_attempts: int, input_missing: bool, cause: str) -> None:
    """Decide the state of a job whose run was interrupted: cancelled, failed or queued again."""
    if job.cancel_requested:
        job.state, job.error = JobState.CANCELLED.value, None
    elif input_missing:
        job.state = JobState.FAILED.value
        job.error = f"{cause} and its stored input is missing or corrupt"
    elif job.attempts >= max_attempts:
        job.state = JobState.FAILED.value
        job.error = (f"{cause} {job.attempts} times (limit {max_attempts});"
                     " the input may crash the reconstruction - check it or resubmit")
    else:
        job.state, job.step, job.progress, job.worker = JobState.QUEUED.value, "re-queued", 0.0, None
    if job.state != JobState.QUEUED.value:
        job.finished_at = utcnow()
        job.run_seconds = _run_seconds(job.started_at, job.finished_at)


def _run_seconds(started: datetime | None, finished: datetime) -> float | None:
    return None if started is None else max((finished - _aware(started)).total_seconds(), 0.0)
