"""``recon token create|list|revoke`` and ``recon db upgrade`` end to end: the real CLI in a subprocess."""

from __future__ import annotations

import hashlib

import pytest

from recon_service.cli import main
from recon_service.db import make_engine
from recon_service.db.migrate import current_revision, head_revision
from recon_service.security import Authenticator, Principal
from recon_service.security.token_admin import list_tokens


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """The CLI's configuration: a fresh RECON_DATA_DIR and the default SQLite database in it."""
    for name in ("RECON_DATABASE_URL", "RECON_API_TOKENS", "RECON_OIDC_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECON_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_token_lifecycle_through_the_cli(data_dir, run_recon):
    assert run_recon("db", "upgrade").stdout.strip() == head_revision()

    created = run_recon("token", "create", "--name", "ci-runner", "--scopes", "jobs:submit,jobs:read")
    token = created.stdout.strip()
    assert len(created.stdout.splitlines()) == 1 and token.startswith("recon_") and len(token) > 40
    assert "shown only now" in created.stderr and token not in created.stderr
    assert main(["token", "create", "--name", "viewer", "--scopes", "jobs:read"]) == 0

    # the token text is in no file of the database (main file and write-ahead log), its digest is
    stored = b"".join(path.read_bytes() for path in data_dir.glob("jobs.db*"))
    assert token.encode() not in stored
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert digest.encode() in stored

    engine = make_engine(f"sqlite:///{data_dir / 'jobs.db'}")
    auth = Authenticator({}, engine)
    assert auth.authenticate(token) == Principal("ci-runner", frozenset({"jobs:submit", "jobs:read"}), "database")

    listing = run_recon("token", "list").stdout
    lines = listing.splitlines()
    assert lines[0].split() == ["NAME", "SCOPES", "CREATED", "REVOKED"]
    assert lines[1].split()[:2] == ["ci-runner", "jobs:submit,jobs:read"] and lines[1].split()[3] == "-"
    assert lines[2].split()[:2] == ["viewer", "jobs:read"]
    assert token not in listing and digest not in listing

    revoked = run_recon("token", "revoke", "ci-runner")
    assert "revoked" in revoked.stdout
    assert auth.authenticate(token) is None
    assert [(t.name, t.revoked) for t in list_tokens(engine)] == [("ci-runner", True), ("viewer", False)]
    engine.dispose()


def test_token_cli_errors_are_clear(data_dir, capsys):
    """In process: every ``recon`` start pays for importing torch; the subprocess path is shown above."""
    assert main(["token", "create", "--name", "taken", "--scopes", "jobs:read"]) == 0
    token = capsys.readouterr().out.strip()
    for args, message in [
        (["token", "create", "--name", "ops", "--scopes", "jobs:read,jobs:delete"], "unknown scope(s) ['jobs:delete']"),
        (["token", "create", "--name", "taken", "--scopes", "review"], "a token named 'taken' already exists"),
        (["token", "create", "--name", "bad name", "--scopes", "review"], "token name 'bad name' is not valid"),
        (["token", "create", "--name", "none", "--scopes", ""], "a token needs at least one scope"),
        (["token", "revoke", "ghost"], "no token named 'ghost'"),
    ]:
        assert main(args) == 2, args
        out, err = capsys.readouterr()
        assert out == "" and f"recon: error: {message}" in err and token not in err, (args, err)
    engine = make_engine(f"sqlite:///{data_dir / 'jobs.db'}")
    assert [t.name for t in list_tokens(engine)] == ["taken"]
    engine.dispose()


def test_cli_on_postgresql(postgres_server, monkeypatch, run_recon):
    url = postgres_server.create_database()
    monkeypatch.setenv("RECON_DATABASE_URL", url)
    monkeypatch.delenv("RECON_API_TOKENS", raising=False)
    # token commands migrate first (`db upgrade` itself is run above on SQLite; one start less here)
    token = run_recon("token", "create", "--name", "pacs-bridge", "--scopes", "jobs:submit").stdout.strip()
    engine = make_engine(url)
    try:
        assert current_revision(engine) == head_revision()
        assert Authenticator({}, engine).authenticate(token).name == "pacs-bridge"
    finally:
        engine.dispose()


def test_unreachable_database_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("RECON_DATABASE_URL", "postgresql+psycopg://recon:s3cret@127.0.0.1:1/recon")
    assert main(["db", "upgrade"]) == 2
    err = capsys.readouterr().err
    assert "recon: error: cannot open the database postgresql+psycopg://recon:***@127.0.0.1:1/recon" in err
    assert "s3cret" not in err
