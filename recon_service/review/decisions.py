"""A reviewer's decision on a job's result, final and recorded with the outbox in one transaction.

* **approve**: the job's deliveries waiting for review go to the outbox; a job with no delivery planned gets one to
  each destination of its pipeline's auto-delivery rule.
* **reject**: deliveries waiting for review become ``rejected`` (never sent), and no delivery of the job can be
  asked for afterwards: the series stays out of the archive, with the reviewer's reason on record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from recon_service.db.schema import Delivery, Review
from recon_service.jobs.store import utcnow
from recon_service.pacs.config import PacsConfig
from recon_service.pacs.outbox import AWAITING_APPROVAL, PENDING, REJECTED, add_deliveries

DECISIONS = ("approve", "reject")
STORED = {"approve": "approved", "reject": "rejected"}
MAX_COMMENT = 2000


class AlreadyReviewed(Exception):
    """The job has its decision already; decisions are final."""


@dataclass(frozen=True)
class Decision:
    job_id: str
    decision: str  # approved | rejected
    comment: str
    reviewer: str
    decided_at: datetime

    @classmethod
    def of(cls, row: Review) -> Decision:
        return cls(row.job_id, row.decision, row.comment, row.reviewer, row.decided_at)


class Reviews:
    def __init__(self, engine: Engine, config: PacsConfig):
        self.engine, self.config = engine, config

    def get(self, job_id: str) -> Decision | None:
        with Session(self.engine) as session:
            row = session.get(Review, job_id)
            return None if row is None else Decision.of(row)

    def of_jobs(self, job_ids: list[str]) -> dict[str, Decision]:
        if not job_ids:
            return {}
        with Session(self.engine) as session:
            return {r.job_id: Decision.of(r) for r in session.scalars(select(Review).where(Review.job_id.in_(job_ids)))}

    def decide(self, job_id: str, pipeline: str, decision: str, comment: str, reviewer: str) -> Decision:
        """Record the decision and act on the job's deliveries; :class:`AlreadyReviewed` when it was decided."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
        comment = comment.strip()
        if decision == "reject" and not comment:
            raise ValueError("a rejection needs a comment saying why")
        if len(comment) > MAX_COMMENT:
            raise ValueError(f"the comment is longer than {MAX_COMMENT} characters")
        now = utcnow()
        with Session(self.engine, expire_on_commit=False) as session:
            row = Review(job_id=job_id, decision=STORED[decision], comment=comment, reviewer=reviewer[:128],
                         decided_at=now)
            session.add(row)
            try:
                session.flush()
            except IntegrityError as err:
                session.rollback()
                raise AlreadyReviewed(f"job {job_id} was already reviewed; a decision is final") from err
            deliveries = session.scalars(select(Delivery).where(Delivery.job_id == job_id)).all()
            waiting = [d for d in deliveries if d.state == AWAITING_APPROVAL]
            if decision == "approve":
                for d in waiting:
                    d.state, d.next_attempt_at = PENDING, now
                if not deliveries:
                    add_deliveries(session, job_id, [(name, PENDING) for name in
                                                     self.config.auto_destinations(pipeline)], reviewer)
            else:
                for d in waiting:
                    d.state, d.last_error = REJECTED, "rejected in review"
            session.commit()
            return Decision.of(row)
