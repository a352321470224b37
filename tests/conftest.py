import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def recon_command() -> list[str]:
    """The installed ``recon`` console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).parent / "recon"
    return [str(script)] if script.exists() else [sys.executable, "-m", "recon_service.cli"]


@pytest.fixture
def run_recon():
    """Run the real ``recon`` CLI in a subprocess; returns the CompletedProcess."""

    def run(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([*recon_command(), *args], capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT, env=env)
        if check and proc.returncode != 0:
            raise AssertionError(f"recon {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine OpenMP barriers stall."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL 15 server on 127.0.0.1 for the whole session (see tests/postgres.py)."""
    from postgres import PostgresServer, PostgresUnavailable

    server = PostgresServer()
    try:
        server.start()
    except PostgresUnavailable as err:
        pytest.skip(str(err))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """SQLAlchemy URL of the server's ``recon`` database: postgresql+psycopg://postgres@127.0.0.1:PORT/recon."""
    return postgres_server.url("recon")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """An empty database for one test, on SQLite and on PostgreSQL (a fresh database on the session server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def db_engine(database_url):
    """A SQLAlchemy engine on ``database_url`` (SQLite and PostgreSQL), migrated to head."""
    from recon_service.db import make_engine, upgrade_to_head

    engine = make_engine(database_url)
    upgrade_to_head(engine)
    yield engine
    engine.dispose()
