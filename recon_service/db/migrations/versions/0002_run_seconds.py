"""Jobs keep their run time (start to end) so metrics aggregate it in SQL instead of reading every job.

Revision ID: 0002
Revises: 0001
"""

from datetime import UTC

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _utc(value):  # noqa: ANN001, ANN202 - SQLite hands back naive UTC datetimes
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def upgrade() -> None:
    op.add_column("jobs", sa.Column("run_seconds", sa.Float, nullable=True))
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("started_at", sa.DateTime(timezone=True)),
                    sa.column("finished_at", sa.DateTime(timezone=True)), sa.column("run_seconds", sa.Float))
    conn = op.get_bind()
    finished = conn.execute(sa.select(jobs.c.id, jobs.c.started_at, jobs.c.finished_at).where(
        jobs.c.started_at.is_not(None), jobs.c.finished_at.is_not(None))).all()
    for job_id, started, ended in finished:
        seconds = max((_utc(ended) - _utc(started)).total_seconds(), 0.0)
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(run_seconds=seconds))


def downgrade() -> None:
    op.drop_column("jobs", "run_seconds")  # SQLite >= 3.35 drops a column in place (no table copy)
