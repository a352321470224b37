"""Bearer-token authentication with scopes for every route that touches patient data."""

from recon_service.security.deps import require_scope
from recon_service.security.oidc import OIDCValidator
from recon_service.security.principal import SCOPES, Principal
from recon_service.security.tokens import Authenticator, hash_token, parse_static_tokens

__all__ = ["SCOPES", "Authenticator", "OIDCValidator", "Principal", "hash_token", "parse_static_tokens",
           "require_scope"]
