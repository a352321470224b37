"""Database API tokens for ``recon token create|list|revoke``.

A new token is random, shown to the operator once and stored only as its SHA-256 digest, so a copy of the
database does not give access. Revoked tokens keep their row (and name) for the audit trail.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from recon_service.db.schema import ApiToken
from recon_service.jobs.store import utcnow
from recon_service.security.principal import SCOPES
from recon_service.security.tokens import hash_token, parse_scopes

TOKEN_PREFIX = "recon_"
# names appear as the actor in the audit log; ':' is reserved for "oidc:<sub>", static-<n> for RECON_API_TOKENS
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_RESERVED = re.compile(r"static-\d+")


class TokenError(ValueError):
    """A token request the database cannot satisfy: bad or duplicate name, unknown scope, unknown token."""


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a stored token: never the token or its hash."""

    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _info(row: ApiToken) -> TokenInfo:
    scopes = tuple(s for s in SCOPES if s in row.scopes.split(","))
    return TokenInfo(row.name, scopes, row.created_at, row.revoked_at)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise TokenError(f"token name {name!r} is not valid: use 1-128 letters, digits, '.', '_', '@' or '-', "
                         "starting with a letter or digit")
    if _RESERVED.fullmatch(name):
        raise TokenError(f"token name {name!r} is reserved for tokens from RECON_API_TOKENS")
    return name


def create_token(engine: Engine, name: str, scopes: str) -> tuple[str, TokenInfo]:
    """Store a new random token named ``name`` with comma-separated ``scopes``; returns (token, info).

    The token itself is returned only here; the database keeps its SHA-256 digest."""
    check_name(name)
    try:
        granted = parse_scopes(scopes)
    except ValueError as err:
        raise TokenError(str(err)) from None
    if not granted:
        raise TokenError(f"a token needs at least one scope; known: {', '.join(SCOPES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_sha256=hash_token(token), created_at=utcnow(),
                   scopes=",".join(s for s in SCOPES if s in granted))
    with Session(engine, expire_on_commit=False) as session:
        if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
            raise TokenError(f"a token named {name!r} already exists (names stay taken after revoke)")
        session.add(row)
        try:
            session.commit()
        except IntegrityError:  # a concurrent create with the same name
            raise TokenError(f"a token named {name!r} already exists (names stay taken after revoke)") from None
        return token, _info(row)


def list_tokens(engine: Engine) -> list[TokenInfo]:
    """Every stored token, oldest first, revoked ones included."""
    with Session(engine) as session:
        return [_info(row) for row in session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id))]


def revoke_token(engine: Engine, name: str) -> TokenInfo:
    """Revoke the token named ``name`` at once (the next request with it gets 401)."""
    with Session(engine, expire_on_commit=False) as session:
        row = session.scalar(select(ApiToken).where(ApiToken.name == name))
        if row is None:
            raise TokenError(f"no token named {name!r}; see `recon token list`")
        if row.revoked_at is not None:
            when = row.revoked_at.isoformat(timespec="seconds")
            raise TokenError(f"the token {name!r} was already revoked at {when}")
        row.revoked_at = utcnow()
        session.commit()
        return _info(row)


def format_tokens(tokens: list[TokenInfo]) -> str:
    """A plain table for ``recon token list``: name, scopes, created, revoked."""
    rows = [("NAME", "SCOPES", "CREATED", "REVOKED")]
    rows += [(t.name, ",".join(t.scopes), t.created_at.isoformat(timespec="seconds"),
              t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "-") for t in tokens]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
