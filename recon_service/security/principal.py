"""Who is calling and what they may do: the scopes and the :class:`Principal` every authenticator returns."""

from __future__ import annotations

from dataclasses import dataclass

SCOPES = ("jobs:submit", "jobs:read", "review", "admin")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token name (never the token itself) and the scopes it grants."""

    name: str
    scopes: frozenset[str]
    source: str  # "static", "database" or "oidc"

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes
