"""The persistent outbox: a job's result series on their way to PACS destinations, one ``deliveries`` row each.

States:
- ``awaiting-approval``: a learned pipeline's result waits for a reviewer's approval before it may go.
- ``pending``: due at ``next_attempt_at``.
- ``sending``: a sender holds it until ``lease_until`` and renews the lease as instances go out. A sender that
  died (``kill -9``, power) leaves the lease to run out; then any sender takes the delivery up again.
- ``delivered`` and ``failed`` (the peer refused the data itself, or the destination is no longer configured)
  are final; so is ``rejected``: a reviewer kept the result out of the archive (``recon_service.review``).

Every attempt sends the same files, so the same SOP instance UIDs: a PACS stores an instance it already holds
once, and a retry after an outage or a crash cannot duplicate the series. A failed attempt is retried after a
wait that doubles from ``retry.initial_s`` up to ``retry.max_s``, for as long as it takes.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import Engine, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from recon_service.audit import AuditLog
from recon_service.db.schema import Delivery, Job
from recon_service.jobs.results import result_dicom_files
from recon_service.jobs.store import utcnow
from recon_service.pacs.config import PacsConfig
from recon_service.pacs.deidentify import deidentify
from recon_service.pacs.polling import PollingThread
from recon_service.pacs.senders import DeliveryError, send

LOG = logging.getLogger(__name__)
AWAITING_APPROVAL, PENDING, SENDING = "awaiting-approval", "pending", "sending"
DELIVERED, FAILED, REJECTED = "delivered", "failed", "rejected"
ACTOR = "pacs-outbox"
MAX_ERROR = 500


@dataclass(frozen=True)
class DeliveryRecord:
    id: int
    job_id: str
    destination: str
    state: str
    requested_by: str
    attempts: int
    failures: int
    instances: int | None
    sent: int
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, row: Delivery) -> DeliveryRecord:
        return cls(row.id, row.job_id, row.destination, row.state, row.requested_by, row.attempts, row.failures,
                   row.instances, row.sent, row.last_error, row.next_attempt_at, row.created_at, row.delivered_at)


class DeliveryExists(Exception):
    """The job already has a delivery to that destination."""


def planned_deliveries(config: PacsConfig, pipeline: str, learned: bool,
                       flagged: bool = False) -> list[tuple[str, str]]:
    """``(destination, initial state)`` of a succeeded job of ``pipeline`` by the auto-delivery rules. A result
    flagged out of distribution always waits for a reviewer's approval, whatever the rules say."""
    state = AWAITING_APPROVAL if flagged or config.needs_review(pipeline, learned) else PENDING
    return [(name, state) for name in config.auto_destinations(pipeline)]


def add_deliveries(session: Session, job_id: str, planned: list[tuple[str, str]], requested_by: str) -> None:
    """Add outbox rows inside the caller's transaction (the job store adds them with the job's success)."""
    now = utcnow()
    for destination, state in planned:
        session.add(Delivery(job_id=job_id, destination=destination, state=state, requested_by=requested_by,
                             attempts=0, failures=0, sent=0, created_at=now,
                             next_attempt_at=now if state == PENDING else None))


class Outbox:
    """Queue, claim, report and settle deliveries. Safe across threads and processes through the database."""

    def __init__(self, engine: Engine, config: PacsConfig):
        self.engine = engine
        self.config = config

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # --- requests -------------------------------------------------------------------------------------------

    def request(self, job_id: str, destination: str, requested_by: str) -> DeliveryRecord:
        """Queue a delivery of a succeeded job to ``destination`` now (a manual push). A failed earlier delivery
        to the same destination is queued again; an open or delivered one raises :class:`DeliveryExists`."""
        self.config.destination(destination)  # KeyError naming the known ones
        with self._session() as session:
            row = session.scalar(select(Delivery).where(Delivery.job_id == job_id,
                                                        Delivery.destination == destination))
            now = utcnow()
            if row is not None:
                if row.state != FAILED:
                    raise DeliveryExists(f"job {job_id} already has a delivery to {destination!r} ({row.state})")
                row.state, row.next_attempt_at, row.last_error, row.requested_by = PENDING, now, None, requested_by
            else:
                add_deliveries(session, job_id, [(destination, PENDING)], requested_by)
            try:
                session.commit()
            except IntegrityError as err:  # a concurrent request for the same pair
                raise DeliveryExists(f"job {job_id} already has a delivery to {destination!r}") from err
            return self._one(session, job_id, destination)

    # --- reading --------------------------------------------------------------------------------------------

    def for_job(self, job_id: str) -> list[DeliveryRecord]:
        return self.for_jobs([job_id]).get(job_id, [])

    def for_jobs(self, job_ids: list[str]) -> dict[str, list[DeliveryRecord]]:
        """The deliveries of each of ``job_ids`` (jobs without any left out), in one query."""
        out: dict[str, list[DeliveryRecord]] = {}
        if not job_ids:
            return out
        with self._session() as session:
            for row in session.scalars(select(Delivery).where(Delivery.job_id.in_(job_ids)).order_by(Delivery.id)):
                out.setdefault(row.job_id, []).append(DeliveryRecord.of(row))
        return out

    def _one(self, session: Session, job_id: str, destination: str) -> DeliveryRecord:
        return DeliveryRecord.of(session.scalar(select(Delivery).where(Delivery.job_id == job_id,
                                                                       Delivery.destination == destination)))

    def figures(self) -> dict[str, dict[str, int]]:
        """Per destination: deliveries by state and the failed attempts so far (``failures``)."""
        with self._session() as session:
            rows = session.execute(select(Delivery.destination, Delivery.state, func.count(),
                                          func.sum(Delivery.failures)).group_by(Delivery.destination,
                                                                                Delivery.state)).all()
        out: dict[str, dict[str, int]] = {name: {} for name in self.config.destinations}
        for destination, state, count, failures in rows:
            figures = out.setdefault(destination, {})
            figures[state] = int(count)
            figures["failures"] = figures.get("failures", 0) + int(failures or 0)
        return out

    # --- senders --------------------------------------------------------------------------------------------

    def claim(self, sender: str) -> DeliveryRecord | None:
        """Take the oldest due delivery: pending and due, or sending with a lease that ran out."""
        lease = timedelta(seconds=self.config.retry.lease_s)
        with self._session() as session:
            while True:
                now = utcnow()
                due = or_(and_(Delivery.state == PENDING, Delivery.next_attempt_at <= now),
                          and_(Delivery.state == SENDING, Delivery.lease_until < now))
                row = session.execute(select(Delivery.id, Delivery.state, Delivery.lease_until).where(due)
                                      .order_by(Delivery.next_attempt_at, Delivery.id).limit(1)).first()
                if row is None:
                    return None
                delivery_id, state, lease_until = row
                claimed = session.execute(
                    update(Delivery).where(Delivery.id == delivery_id, Delivery.state == state,
                                           Delivery.lease_until.is_(None) if lease_until is None
                                           else Delivery.lease_until == lease_until)
                    .values(state=SENDING, sender=sender, lease_until=now + lease, attempts=Delivery.attempts + 1)
                ).rowcount
                session.commit()
                if claimed:
                    return DeliveryRecord.of(session.get(Delivery, delivery_id))

    def report(self, delivery_id: int, sender: str, sent: int, instances: int) -> bool:
        """Record progress and renew the lease; False when another sender has taken the delivery over."""
        lease = timedelta(seconds=self.config.retry.lease_s)
        with self._session() as session:
            ok = session.execute(update(Delivery).where(Delivery.id == delivery_id, Delivery.sender == sender,
                                                        Delivery.state == SENDING)
                                 .values(sent=sent, instances=instances, lease_until=utcnow() + lease)).rowcount
            session.commit()
            return bool(ok)

    def settle(self, delivery_id: int, sender: str, error: str | None = None, permanent: bool = False) -> str | None:
        """End an attempt: delivered (no ``error``), failed (``permanent``) or pending again after the backoff.
        Returns the new state, None when the delivery was no longer this sender's."""
        with self._session() as session:
            row = session.get(Delivery, delivery_id)
            if row is None or row.sender != sender or row.state != SENDING:
                return None
            now = utcnow()
            row.lease_until = None
            if error is None:
                row.state, row.delivered_at, row.last_error = DELIVERED, now, None
            else:
                row.failures += 1
                row.last_error = error[:MAX_ERROR]
                if permanent:
                    row.state = FAILED
                else:
                    retry = self.config.retry
                    wait = min(retry.initial_s * 2 ** max(row.failures - 1, 0), retry.max_s)
                    row.state, row.next_attempt_at = PENDING, now + timedelta(seconds=wait)
            session.commit()
            return row.state


class OutboxRunner(PollingThread):
    """A thread that sends due deliveries one at a time until stopped. Several runners (threads, processes,
    nodes) may share one database: claiming is a conditional update and a lease."""

    name = "pacs-outbox"

    def __init__(self, outbox: Outbox, data_dir: Path, audit: AuditLog, secret: bytes,
                 sender: str | None = None):
        super().__init__()
        self.outbox, self.data_dir, self.audit, self.secret = outbox, Path(data_dir), audit, secret
        self.sender = sender or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.poll_s = outbox.config.retry.poll_s

    def run_once(self) -> bool:
        """Send one due delivery if there is one; returns whether there was."""
        delivery = self.outbox.claim(self.sender)
        if delivery is None:
            return False
        self._deliver(delivery)
        return True

    def _deliver(self, delivery: DeliveryRecord) -> None:
        study_uid = _study_uid(self.outbox.engine, delivery.job_id)
        where = f"to {delivery.destination} (attempt {delivery.attempts})"
        paths = result_dicom_files(self.data_dir, delivery.job_id)
        try:
            destination = self.outbox.config.destination(delivery.destination)
            if not paths:
                raise KeyError("the job has no DICOM result series")
            originals = [pydicom.dcmread(p) for p in paths]
            study_uid = str(originals[0].get("StudyInstanceUID") or "") or study_uid
            instances = [self._prepare(ds, destination.deidentify) for ds in originals]
        except KeyError as err:
            self._settle(delivery, study_uid, str(err.args[0]), permanent=True)
            return
        except Exception as err:  # noqa: BLE001 - a result file that cannot be read will not be readable later
            self._settle(delivery, study_uid, f"reading the result series: {type(err).__name__}: {err}", True)
            return
        count = len(instances)
        self.outbox.report(delivery.id, self.sender, 0, count)

        def sent(done: int) -> None:
            if not self.outbox.report(delivery.id, self.sender, done, count):
                raise DeliveryError("another sender took this delivery over (lease ran out)")

        LOG.info("PACS outbox: job %s %s: %d instance(s)", delivery.job_id, where, count)
        try:
            send(destination, instances, sent)
        except DeliveryError as err:
            self._settle(delivery, study_uid, str(err), err.permanent)
            return
        except Exception as err:  # noqa: BLE001 - an unexpected library error: retry rather than lose the delivery
            LOG.exception("PACS outbox: job %s %s", delivery.job_id, where)
            self._settle(delivery, study_uid, f"{type(err).__name__}: {err}", False)
            return
        self._settle(delivery, study_uid, None, False, count)

    def _prepare(self, ds: pydicom.Dataset, deidentified: bool) -> pydicom.Dataset:
        return deidentify(ds, self.secret) if deidentified else ds

    def _settle(self, delivery: DeliveryRecord, study_uid: str | None, error: str | None, permanent: bool,
                count: int | None = None) -> None:
        state = self.outbox.settle(delivery.id, self.sender, error, permanent)
        if state is None:
            return
        detail = (f"destination {delivery.destination}, attempt {delivery.attempts}: "
                  + (f"{count} instance(s) delivered" if error is None else error))
        outcome = {DELIVERED: "ok", FAILED: "failed"}.get(state, "retry")
        (LOG.info if error is None else LOG.warning)("PACS outbox: job %s %s", delivery.job_id, detail)
        self.audit.record(ACTOR, "pacs.deliver", outcome, delivery.job_id, study_uid, None, detail[:MAX_ERROR])


def _study_uid(engine: Engine, job_id: str) -> str | None:
    with Session(engine) as session:
        study: dict[str, Any] | None = session.scalar(select(Job.study).where(Job.id == job_id))
    uid = (study or {}).get("StudyInstanceUID")
    return uid if isinstance(uid, str) else None


def deidentification_secret(data_dir: Path) -> bytes:
    """The key of the UID remapping, made once per data directory (``pacs-deid.key``, mode 0600) so the same
    UID maps to the same pseudonym across restarts."""
    path = Path(data_dir) / "pacs-deid.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # first writer wins when two processes start together
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes()


