"""API tokens: static ones from ``RECON_API_TOKENS``, hashed ones in the database, optionally OIDC JWTs.

Only SHA-256 digests are kept in memory and in the database; a presented token is hashed and looked up.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from recon_service.db.schema import ApiToken
from recon_service.security.principal import SCOPES, Principal

if TYPE_CHECKING:
    from recon_service.security.oidc import OIDCValidator



def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(text: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = scopes - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown)}; known: {', '.join(SCOPES)}")
    return scopes


def parse_static_tokens(spec: str) -> dict[str, Principal]:
    """``token:scope,scope;token2:scope`` -> {sha256(token): Principal}; names are ``static-<n>``."""
    tokens: dict[str, Principal] = {}
    for n, item in enumerate((part.strip() for part in spec.split(";")), start=1):
        if not item:
            continue
        token, sep, scopes = item.partition(":")
        if not sep or not token.strip():
            raise ValueError(f"RECON_API_TOKENS entry {n} must look like 'token:scope,scope'")
        tokens[hash_token(token.strip())] = Principal(f"static-{n}", parse_scopes(scopes), "static")
    return tokens


class Authenticator:
    """Maps a presented bearer token to a :class:`Principal`, or None when it is not valid.

    Static tokens first, then database tokens, then (when configured) OIDC JWTs."""

    def __init__(self, static_tokens: dict[str, Principal], engine: Engine | None = None,
                 oidc: OIDCValidator | None = None):
        self.static_tokens = static_tokens
        self.engine = engine
        self.oidc = oidc

    def authenticate(self, token: str) -> Principal | None:
        digest = hash_token(token)
        for known, principal in self.static_tokens.items():
            if hmac.compare_digest(known, digest):
                return principal
        if self.engine is not None:
            with Session(self.engine) as session:
                row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest,
                                                            ApiToken.revoked_at.is_(None)))
                if row is not None:
                    return Principal(row.name, parse_scopes(row.scopes), "database")
        if self.oidc is not None:
            return self.oidc.validate(token)  # None unless the token is a valid JWT
        return None
