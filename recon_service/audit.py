"""Append-only audit log: who did what to which job or study, when, and how it ended.

The ``audit_events`` table refuses UPDATE and DELETE at the database level (see migration 0001). Entries
name tokens and job/study identifiers only, never patient data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from recon_service.db.schema import AuditEvent
from recon_service.jobs.store import utcnow


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    outcome: str
    job_id: str | None
    study_uid: str | None
    client: str | None
    detail: str | None


class AuditLog:
    def __init__(self, engine: Engine):
        self.engine = engine

    def record(self, actor: str, action: str, outcome: str, job_id: str | None = None,
               study_uid: str | None = None, client: str | None = None, detail: str | None = None) -> None:
        with Session(self.engine) as session:
            session.add(AuditEvent(at=utcnow(), actor=actor, action=action, outcome=outcome, job_id=job_id,
                                   study_uid=study_uid, client=client, detail=detail))
            session.commit()

    def entries(self, job_id: str | None = None, actor: str | None = None, limit: int = 100,
                offset: int = 0) -> list[AuditEntry]:
        query = select(AuditEvent).order_by(AuditEvent.id.desc())
        if job_id is not None:
            query = query.where(AuditEvent.job_id == job_id)
        if actor is not None:
            query = query.where(AuditEvent.actor == actor)
        with Session(self.engine) as session:
            return [AuditEntry(e.id, e.at, e.actor, e.action, e.outcome, e.job_id, e.study_uid, e.client, e.detail)
                    for e in session.scalars(query.limit(limit).offset(offset))]
