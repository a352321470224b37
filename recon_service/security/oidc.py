"""Optional OIDC bearer JWTs: signature checked against the identity provider's JWKS.

Only asymmetric algorithms (RS256, ES256) are accepted, so a token signed with ``none`` or with an HMAC keyed
by the public key never passes. The JWKS is cached and refetched after ``cache_seconds`` (or for an unknown
key id, at most every 30 s), so withdrawn keys stop working within that time. A failed check returns None
- the caller answers 401 - and logs why, never the token or its claims.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import jwt
from jwt import PyJWKClient
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError

from recon_service.security.principal import SCOPES, Principal
from recon_service.settings import Settings

ALGORITHMS = ("RS256", "ES256")
PREFIX = "oidc:"
MAX_SUBJECT = 128 - len(PREFIX)  # principal names are stored as job owner and audit actor, 128 characters
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

log = logging.getLogger(__name__)


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments separated by dots (JWS compact form)."""
    return bool(_JWT_SHAPE.fullmatch(token))


def scopes_from_claims(claims: dict[str, Any]) -> frozenset[str]:
    """Known scopes from ``scope`` (space separated) and ``scp`` (a list, or space separated); others dropped."""
    found: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, Iterable) and not isinstance(value, dict | bytes):
            found.update(item for item in value if isinstance(item, str))
    return frozenset(found & set(SCOPES))


class OIDCValidator:
    """Turns a valid OIDC access token into a :class:`Principal` named ``oidc:<sub>``."""

    def __init__(self, jwks_url: str, issuer: str | None = None, audience: str | None = None,
                 leeway: float = 30.0, cache_seconds: float = 300.0, timeout: float = 5.0):
        try:
            # the whole key set is cached for cache_seconds; PyJWKClient's per-kid cache (cache_keys) is left
            # off because it never expires, so a key the provider withdrew would stay trusted until a restart
            self.jwks = PyJWKClient(jwks_url, cache_jwk_set=True, lifespan=cache_seconds, timeout=timeout)
        except PyJWKClientError as err:
            raise ValueError(f"RECON_OIDC_JWKS_URL is not usable: {err}") from None
        self.jwks_url = jwks_url
        self.issuer = issuer or None
        self.audience = audience or None
        self.leeway = leeway
        if self.issuer is None:
            log.warning("RECON_OIDC_ISSUER is not set: JWTs from any issuer signed by a key in the JWKS are accepted")
        if self.audience is None:
            log.warning("RECON_OIDC_AUDIENCE is not set: JWTs for any audience are accepted")

    @classmethod
    def from_settings(cls, settings: Settings) -> OIDCValidator | None:
        """A validator when ``RECON_OIDC_JWKS_URL`` is set, else None (OIDC off)."""
        if not settings.oidc_jwks_url:
            return None
        return cls(settings.oidc_jwks_url, settings.oidc_issuer, settings.oidc_audience)

    def validate(self, token: str) -> Principal | None:
        """The caller for a valid token; None (and a log line saying why) for anything else."""
        if not looks_like_jwt(token):
            return None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            log.info("OIDC token rejected: the JWT header cannot be decoded")
            return None
        if header.get("alg") not in ALGORITHMS:
            log.info("OIDC token rejected: its algorithm is not one of %s", ", ".join(ALGORITHMS))
            return None
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
        except PyJWKClientConnectionError as err:
            log.warning("OIDC token rejected: the JWKS at %s cannot be fetched: %s", self.jwks_url, err)
            return None
        except PyJWKClientError:
            log.info("OIDC token rejected: no signing key in the JWKS matches its key id")
            return None
        except Exception as err:  # a broken identity provider must not turn into a 500
            log.warning("OIDC token rejected: the JWKS at %s is not usable: %s: %s", self.jwks_url,
                        type(err).__name__, err)
            return None
        required = ["exp", "sub"] + (["iss"] if self.issuer else []) + (["aud"] if self.audience else [])
        try:
            claims = jwt.decode(token, key, algorithms=list(ALGORITHMS), issuer=self.issuer,
                                audience=self.audience, leeway=self.leeway,
                                options={"require": required, "verify_aud": self.audience is not None})
        except jwt.PyJWTError as err:
            log.info("OIDC token rejected: %s (%s)", type(err).__name__, err)
            return None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.isprintable() or not 0 < len(subject) <= MAX_SUBJECT:
            log.info("OIDC token rejected: its 'sub' claim is not a printable string of 1-%d characters",
                     MAX_SUBJECT)
            return None
        return Principal(PREFIX + subject, scopes_from_claims(claims), "oidc")
