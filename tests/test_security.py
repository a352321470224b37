"""Bearer tokens (static, hashed in the database, OIDC JWTs), scopes over real HTTP, and the audit guarantees."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import text

from recon_service.audit import AuditLog
from recon_service.context import ServiceContext
from recon_service.security import Authenticator, Principal, hash_token, parse_static_tokens, require_scope
from recon_service.security.oidc import OIDCValidator, looks_like_jwt, scopes_from_claims
from recon_service.security.token_admin import TokenError, create_token, list_tokens, revoke_token
from recon_service.settings import Settings

ISSUER = "https://idp.example.org/realms/hospital"
AUDIENCE = "recon-api"

# --------------------------------------------------------------------------- static tokens


def test_static_tokens_parse_to_hashed_principals():
    tokens = parse_static_tokens(" s3cret:jobs:read,jobs:submit ; ops-token:admin ;")
    assert set(tokens) == {hash_token("s3cret"), hash_token("ops-token")}  # only digests are kept
    assert tokens[hash_token("s3cret")] == Principal("static-1", frozenset({"jobs:read", "jobs:submit"}), "static")
    assert tokens[hash_token("ops-token")].allows("review")  # admin implies every scope
    assert parse_static_tokens("") == {}


@pytest.mark.parametrize(("spec", "message"), [
    ("just-a-token", "entry 1 must look like 'token:scope,scope'"),
    ("ok:jobs:read;:jobs:read", "entry 2 must look like"),
    ("tok:jobs:read,jobs:delete", "unknown scope.*jobs:delete"),
])
def test_static_token_errors_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_static_tokens(spec)


# --------------------------------------------------------------------------- database tokens


def test_database_tokens_are_stored_hashed_and_revocable(db_engine):
    token, info = create_token(db_engine, "ci-runner", "jobs:read,jobs:submit")
    assert info.scopes == ("jobs:submit", "jobs:read") and not info.revoked
    with db_engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM api_tokens"))]
    assert len(rows) == 1
    assert rows[0]["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert not any(token in str(value) for value in rows[0].values())  # the token text is nowhere

    auth = Authenticator({}, db_engine)
    assert auth.authenticate(token) == Principal("ci-runner", frozenset({"jobs:read", "jobs:submit"}), "database")
    assert auth.authenticate(token + "x") is None

    revoked = revoke_token(db_engine, "ci-runner")
    assert revoked.revoked and revoked.revoked_at.tzinfo is not None
    assert auth.authenticate(token) is None
    assert [(t.name, t.revoked) for t in list_tokens(db_engine)] == [("ci-runner", True)]


def test_database_token_errors(db_engine):
    create_token(db_engine, "viewer", "jobs:read")
    with pytest.raises(TokenError, match="already exists"):
        create_token(db_engine, "viewer", "review")
    with pytest.raises(TokenError, match="unknown scope.*jobs:write"):
        create_token(db_engine, "writer", "jobs:write")
    with pytest.raises(TokenError, match="at least one scope"):
        create_token(db_engine, "nothing", " , ")
    with pytest.raises(TokenError, match="not valid"):
        create_token(db_engine, "oidc:alice", "jobs:read")
    with pytest.raises(TokenError, match="reserved"):
        create_token(db_engine, "static-1", "jobs:read")
    with pytest.raises(TokenError, match="no token named 'ghost'"):
        revoke_token(db_engine, "ghost")
    revoke_token(db_engine, "viewer")
    with pytest.raises(TokenError, match="already revoked"):
        revoke_token(db_engine, "viewer")
    assert [t.name for t in list_tokens(db_engine)] == ["viewer"]


# --------------------------------------------------------------------------- audit


def test_audit_log_is_append_only_in_the_database(db_engine):
    audit = AuditLog(db_engine)
    audit.record("ci-runner", "job.submit", "accepted", job_id="j1", study_uid="1.2.3", client="127.0.0.1")
    audit.record("ci-runner", "job.cancel", "ok", job_id="j1")
    before = [(e.id, e.action, e.outcome) for e in audit.entries()]
    statements = ["UPDATE audit_events SET outcome = 'denied'", "DELETE FROM audit_events WHERE job_id = 'j1'",
                  "DELETE FROM audit_events"]
    if db_engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_events")
    for statement in statements:
        with pytest.raises(Exception, match="append-only"), db_engine.begin() as conn:
            conn.execute(text(statement))
    assert [(e.id, e.action, e.outcome) for e in audit.entries()] == before
    assert audit.entries(job_id="j1")[0].at.tzinfo is not None


# --------------------------------------------------------------------------- OIDC


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class JWKSServer:
    """A real HTTP server on loopback that serves a JWKS document and counts the fetches."""

    def __init__(self, keys: list[dict[str, Any]]):
        self.keys = keys
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                if self.path == "/jwks.json":
                    outer.fetches += 1
                    body, status = json.dumps({"keys": outer.keys}).encode(), 200
                elif self.path == "/garbage":
                    body, status = b"<html>not json</html>", 200
                else:
                    body, status = b"{}", 500
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = self.base + "/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def keys():
    return {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "other-rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1())}


@pytest.fixture(scope="module")
def jwks(keys):
    rsa_jwk = {**RSAAlgorithm.to_jwk(keys["rsa"].public_key(), as_dict=True), "kid": "rsa-1", "use": "sig",
               "alg": "RS256"}
    ec_jwk = {**ECAlgorithm.to_jwk(keys["ec"].public_key(), as_dict=True), "kid": "ec-1", "use": "sig",
              "alg": "ES256"}
    server = JWKSServer([rsa_jwk, ec_jwk])
    yield server
    server.close()


def _dead_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/jwks.json"


def mint(keys, *, key: str = "rsa", kid: str = "rsa-1", alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "nbf": now - 5, "exp": now + 600,
               "scope": "openid profile jobs:read"}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, keys[key], algorithm=alg, headers={"kid": kid})


def _unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"


@pytest.fixture
def validator(jwks):
    return OIDCValidator(jwks.url, issuer=ISSUER, audience=AUDIENCE)


def test_valid_jwts_give_principals_with_known_scopes(keys, jwks, validator):
    principal = validator.validate(mint(keys, scope="openid jobs:read jobs:submit email"))
    assert principal == Principal("oidc:alice", frozenset({"jobs:read", "jobs:submit"}), "oidc")
    es = validator.validate(mint(keys, key="ec", kid="ec-1", alg="ES256", sub="bob", scope=None,
                                 scp=["review", "offline_access"]))
    assert es == Principal("oidc:bob", frozenset({"review"}), "oidc")
    nothing = validator.validate(mint(keys, scope="openid"))
    assert nothing is not None and nothing.scopes == frozenset() and not nothing.allows("jobs:read")


def test_scope_claims():
    assert scopes_from_claims({"scope": "jobs:read admin x", "scp": ["review", 3]}) == {"jobs:read", "admin",
                                                                                         "review"}
    assert scopes_from_claims({"scp": "jobs:submit openid"}) == {"jobs:submit"}
    assert scopes_from_claims({"scope": {"jobs:read": True}}) == frozenset()


def test_jwks_is_fetched_once_and_cached(keys, jwks):
    fresh = OIDCValidator(jwks.url, issuer=ISSUER, audience=AUDIENCE)
    before = jwks.fetches
    for sub in ("a", "b", "c"):
        assert fresh.validate(mint(keys, sub=sub)).name == f"oidc:{sub}"
    assert jwks.fetches == before + 1


def test_key_rotation_follows_the_jwks(keys):
    """A key the provider adds is used, one it withdraws stops working, once the cached key set expires."""
    old_jwk = {**RSAAlgorithm.to_jwk(keys["rsa"].public_key(), as_dict=True), "kid": "old"}
    new_jwk = {**RSAAlgorithm.to_jwk(keys["other-rsa"].public_key(), as_dict=True), "kid": "new"}
    server = JWKSServer([old_jwk])
    try:
        fresh = OIDCValidator(server.url, issuer=ISSUER, audience=AUDIENCE, cache_seconds=0.3)
        assert fresh.validate(mint(keys, kid="old")) is not None
        server.keys = [new_jwk]
        time.sleep(0.4)
        assert fresh.validate(mint(keys, kid="old")) is None
        assert fresh.validate(mint(keys, key="other-rsa", kid="new")) is not None
    finally:
        server.close()


def _rejections(keys) -> dict[str, str]:
    now = int(time.time())
    public_pem = keys["rsa"].public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 600, "scope": "admin"}
    hs_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims)
    hs_sig = _b64(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest())
    return {
        "expired": mint(keys, exp=now - 3600, iat=now - 7200, nbf=now - 7200),
        "not yet valid": mint(keys, nbf=now + 3600),
        "wrong issuer": mint(keys, iss="https://evil.example.org"),
        "no issuer": mint(keys, iss=None),
        "wrong audience": mint(keys, aud="another-api"),
        "no audience": mint(keys, aud=None),
        "no expiry": mint(keys, exp=None),
        "no subject": mint(keys, sub=None),
        "wrong key": mint(keys, key="other-rsa"),
        "unknown kid": mint(keys, key="other-rsa", kid="rsa-2"),
        "ec key named as rsa": mint(keys, key="ec", kid="rsa-1", alg="ES256"),
        "alg none": _unsigned({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims) + ".",
        "HS256 keyed with the public key": f"{hs_input}.{hs_sig}",
        "tampered payload": ".".join([mint(keys).split(".")[0], _b64(json.dumps(claims).encode()),
                                      mint(keys).split(".")[2]]),
        "subject too long": mint(keys, sub="x" * 200),
    }


def test_invalid_jwts_are_rejected_and_logged_without_contents(keys, validator, caplog):
    caplog.set_level(logging.INFO, logger="recon_service.security.oidc")
    for case, token in _rejections(keys).items():
        caplog.clear()
        assert validator.validate(token) is None, case
        assert "OIDC token rejected" in caplog.text, case
        assert token not in caplog.text and token.split(".")[1] not in caplog.text, case


def test_jwks_failures_reject_without_crashing(keys, jwks, caplog):
    token = mint(keys)
    caplog.set_level(logging.INFO, logger="recon_service.security.oidc")
    for url, reason in [(_dead_url(), "cannot be fetched"), (jwks.base + "/missing", "cannot be fetched"),
                        (jwks.base + "/garbage", "not usable")]:
        caplog.clear()
        assert OIDCValidator(url, issuer=ISSUER, audience=AUDIENCE).validate(token) is None
        assert reason in caplog.text and token.split(".")[1] not in caplog.text


def test_oidc_settings():
    assert OIDCValidator.from_settings(Settings(oidc_jwks_url=None)) is None
    assert OIDCValidator.from_settings(Settings(oidc_jwks_url="http://127.0.0.1:9/jwks")).audience is None
    with pytest.raises(ValueError, match="RECON_OIDC_JWKS_URL.*scheme"):
        OIDCValidator("file:///etc/passwd")
    assert looks_like_jwt("a.b.c") and not looks_like_jwt("recon_abc-def") and not looks_like_jwt("a.b.c.d")


# --------------------------------------------------------------------------- real HTTP


def guarded_app(context: ServiceContext) -> FastAPI:
    """The smallest app with the service's guards: one route per scope."""
    app = FastAPI()
    app.state.context = context

    @app.get("/read")
    def read(p: Annotated[Principal, Depends(require_scope("jobs:read"))]) -> dict[str, str]:
        return {"name": p.name, "source": p.source}

    @app.post("/submit")
    def submit(p: Annotated[Principal, Depends(require_scope("jobs:submit"))]) -> dict[str, str]:
        return {"name": p.name, "source": p.source}

    @app.get("/admin")
    def admin(p: Annotated[Principal, Depends(require_scope("admin"))]) -> dict[str, str]:
        return {"name": p.name, "source": p.source}

    return app


@contextlib.contextmanager
def serve(app: FastAPI, lifespan: str = "off") -> Iterator[httpx.Client]:
    """Run ``app`` under uvicorn on a loopback port in a thread; yields an HTTP client for it (``lifespan="on"``
    for the service's app, whose lifespan opens the database)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=20) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def _call(client: httpx.Client, route: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.request("POST" if route == "/submit" else "GET", route, headers=headers)


def test_scopes_over_http_for_static_database_and_oidc_tokens(tmp_path, keys, jwks):
    settings = Settings(data_dir=tmp_path, api_tokens="static-reader-token:jobs:read",
                        oidc_jwks_url=jwks.url, oidc_issuer=ISSUER, oidc_audience=AUDIENCE)
    context = ServiceContext.create(settings)
    db_token, _ = create_token(context.engine, "ci-submitter", "jobs:submit")
    oidc_reader = mint(keys, sub="dr.house", scope="openid jobs:read")
    oidc_admin = mint(keys, sub="ops", scp=["admin"])
    expected = {  # (token, route) -> status
        (None, "/read"): 401, ("not-a-token", "/read"): 401, ("a.b.c", "/read"): 401,
        ("static-reader-token", "/read"): 200, ("static-reader-token", "/submit"): 403,
        (db_token, "/submit"): 200, (db_token, "/read"): 403, (db_token, "/admin"): 403,
        (oidc_reader, "/read"): 200, (oidc_reader, "/submit"): 403,
        (oidc_admin, "/read"): 200, (oidc_admin, "/submit"): 200, (oidc_admin, "/admin"): 200,
        (mint(keys, exp=int(time.time()) - 3600), "/read"): 401, (mint(keys, aud="other"), "/read"): 401,
        (mint(keys, key="other-rsa"), "/read"): 401,
    }
    try:
        with serve(guarded_app(context)) as client:
            got = {case: _call(client, case[1], case[0]).status_code for case in expected}
            assert got == expected
            assert _call(client, "/read", None).headers["www-authenticate"] == "Bearer"
            assert _call(client, "/read", "static-reader-token").json() == {"name": "static-1", "source": "static"}
            assert _call(client, "/submit", db_token).json() == {"name": "ci-submitter", "source": "database"}
            assert _call(client, "/read", oidc_reader).json() == {"name": "oidc:dr.house", "source": "oidc"}
            basic = client.get("/read", headers={"Authorization": "Basic " + _b64(b"static-reader-token:x")})
            assert basic.status_code == 401

            revoke_token(context.engine, "ci-submitter")  # effective on the next request
            assert _call(client, "/submit", db_token).status_code == 401
    finally:
        context.engine.dispose()


def test_unreachable_jwks_gives_401_not_500(tmp_path, keys, caplog):
    context = ServiceContext.create(Settings(data_dir=tmp_path, oidc_jwks_url=_dead_url(), oidc_issuer=ISSUER,
                                             oidc_audience=AUDIENCE))
    token = mint(keys)
    caplog.set_level(logging.INFO, logger="recon_service.security.oidc")
    try:
        with serve(guarded_app(context)) as client:
            response = _call(client, "/read", token)
        assert response.status_code == 401 and response.json() == {"detail": "the bearer token is not valid"}
        assert "the JWKS at" in caplog.text and "cannot be fetched" in caplog.text
        assert token.split(".")[1] not in caplog.text
    finally:
        context.engine.dispose()


def test_oidc_tokens_on_the_service_routes(tmp_path, keys, jwks):
    """The real app (``create_app``, its lifespan, its routers) under uvicorn on loopback, JWTs checked against
    the JWKS server: scopes from the ``scope``/``scp`` claims open /v1/jobs and /v1/pipelines, or answer 403;
    a JWT that is not valid answers 401 everywhere."""
    from api_server import write_sinogram_file

    from recon_service.api import create_app
    from recon_service.db import make_engine

    settings = Settings(data_dir=tmp_path / "data", run_workers=False, warmup=False, oidc_jwks_url=jwks.url,
                        oidc_issuer=ISSUER, oidc_audience=AUDIENCE)
    sinogram = write_sinogram_file(tmp_path / "chest.h5").read_bytes()
    now = int(time.time())
    reader = mint(keys, sub="dr.house", scope="openid jobs:read")
    submitter = mint(keys, sub="ci-runner", scope=None, scp=["jobs:submit"])
    both = mint(keys, key="ec", kid="ec-1", alg="ES256", sub="alice", scope="jobs:read jobs:submit")
    admin = mint(keys, sub="ops", scope="admin")
    unscoped = mint(keys, sub="eve", scope="openid profile email")
    invalid = {"expired": mint(keys, exp=now - 3600, iat=now - 7200, nbf=now - 7200),
               "wrong audience": mint(keys, aud="another-api"), "wrong key": mint(keys, key="other-rsa"),
               "wrong issuer": mint(keys, iss="https://evil.example.org"), "not a JWT": "a.b.c", "none": None}

    def call(client: httpx.Client, route: str, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if route == "submit":
            return client.post("/v1/jobs", headers=headers, data={"pipeline": "ct-fbp"},
                               files=[("file", ("chest.h5", sinogram, "application/x-hdf5"))])
        return client.get({"jobs": "/v1/jobs", "pipelines": "/v1/pipelines"}[route], headers=headers)

    routes = ("submit", "jobs", "pipelines")
    expected = {reader: (403, 200, 200), submitter: (202, 403, 403), both: (202, 200, 200), admin: (202, 200, 200),
                unscoped: (403, 403, 403), **{token: (401, 401, 401) for token in invalid.values()}}
    names = {reader: "reader", submitter: "submitter", both: "both", admin: "admin", unscoped: "unscoped",
             **{token: name for name, token in invalid.items()}}
    with serve(create_app(settings), lifespan="on") as client:
        got = {names[token]: tuple(call(client, route, token).status_code for route in routes) for token in expected}
        assert got == {names[token]: statuses for token, statuses in expected.items()}
        # what the routes answered is the real thing: the job submitted with an OIDC token is listed and readable
        accepted = call(client, "submit", submitter).json()
        listed = call(client, "jobs", reader).json()["items"]
        assert accepted["id"] in {job["id"] for job in listed}
        assert client.get(f"/v1/jobs/{accepted['id']}", headers={"Authorization": f"Bearer {reader}"}).json()[
            "state"] == "queued"
        assert "ct-fbp" in {p["name"] for p in call(client, "pipelines", reader).json()}
        refused = call(client, "submit", reader)
        assert refused.json() == {"detail": "this token lacks the 'jobs:submit' scope"}
        unauthenticated = call(client, "jobs", invalid["expired"])
        assert unauthenticated.json() == {"detail": "the bearer token is not valid"}
        assert unauthenticated.headers["www-authenticate"].startswith("Bearer")
    engine = make_engine(settings.sqlalchemy_url())
    try:  # the audit log names the OIDC subjects, refusals included
        entries = AuditLog(engine).entries(limit=500)
    finally:
        engine.dispose()
    submits = {(e.actor, e.outcome) for e in entries if e.action == "job.submit"}
    assert ("oidc:ci-runner", "ok") in submits and ("oidc:alice", "ok") in submits
    assert ("oidc:dr.house", "forbidden") in submits and ("oidc:eve", "forbidden") in submits
    assert ("anonymous", "unauthenticated") in submits  # an invalid JWT names no one
    assert not any(token in str(vars(e)) for e in entries for token in (reader, submitter, both, admin, unscoped))
