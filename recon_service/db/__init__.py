"""The service database: engine, ORM tables and Alembic migrations (SQLite by default, PostgreSQL by URL)."""

from recon_service.db.engine import make_engine
from recon_service.db.migrate import upgrade_to_head

__all__ = ["make_engine", "upgrade_to_head"]
