import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# --- no skips: a test that cannot run here fails, with the reason (issue #14) ----------------------------------

def _skip_as_failure(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"a skipped test fails in this suite (install what it needs, or fix it): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _skip_as_failure(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _skip_as_failure(outcome.get_result())


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
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL 15 server on 127.0.0.1 for the whole session (see tests/postgres.py).

    A server that cannot start fails every test that needs it, with the install hint: never a skip."""
    from postgres import PostgresServer, PostgresUnavailable

    server = PostgresServer()
    try:
        server.start()
        problem = None
    except PostgresUnavailable as err:
        problem = str(err)
    if problem is not None:
        pytest.fail(problem, pytrace=False)
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
