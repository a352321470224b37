"""What every part of the running service shares: settings, database, job store, audit log, authenticator and
the PACS configuration."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from recon_service.audit import AuditLog
from recon_service.db import make_engine, upgrade_to_head
from recon_service.jobs.store import JobStore
from recon_service.pacs.config import PacsConfig, load_pacs_config
from recon_service.security.oidc import OIDCValidator
from recon_service.security.tokens import Authenticator, parse_static_tokens
from recon_service.settings import Settings


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    store: JobStore
    audit: AuditLog
    authenticator: Authenticator
    pacs: PacsConfig

    @classmethod
    def create(cls, settings: Settings, migrate: bool = True) -> ServiceContext:
        """Open the database (migrated to the newest schema) and build the shared services."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.sqlalchemy_url())
        if migrate:
            upgrade_to_head(engine)
        pacs = load_pacs_config(settings.pacs_config)
        return cls(settings, engine, JobStore(engine), AuditLog(engine),
                   Authenticator(parse_static_tokens(settings.api_tokens), engine,
                                 OIDCValidator.from_settings(settings)), pacs)
