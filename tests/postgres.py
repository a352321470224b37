"""A throwaway PostgreSQL 15 server on loopback for the job-store tests.

The server lives in a temp directory, listens on 127.0.0.1 only (no Unix socket), trusts connections from
127.0.0.1 only and is deleted when stopped. PostgreSQL refuses to run as root, so as root the server runs as
the ``postgres`` system user in a directory that user owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

# RECON_TEST_POSTGRES_BIN points elsewhere (tests/test_hardening_no_skips.py uses it to show that a missing
# server fails the tests rather than skipping them)
PG_BIN = Path(os.environ.get("RECON_TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
INSTALL_HINT = ("PostgreSQL 15 is not installed: install the Debian package postgresql (postgresql-15); "
                "bash scripts/install-system-deps.sh installs it")


class PostgresUnavailable(RuntimeError):
    """The server cannot be started here (binaries or the ``postgres`` user missing): the tests that need it
    fail with this message (tests/conftest.py), they are never skipped."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """``start()`` initialises and starts a cluster; ``stop()`` stops it and deletes every file."""

    def __init__(self, bin_dir: Path = PG_BIN):
        self.bin_dir = bin_dir
        self.root: Path | None = None
        self.port: int | None = None
        self._run_as: list[str] = []

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def _check(self) -> None:
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not (self.bin_dir / tool).exists():
                raise PostgresUnavailable(f"{self.bin_dir / tool} is missing. {INSTALL_HINT}")
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(f"running as root needs the 'postgres' system user. {INSTALL_HINT}") \
                    from None
            self._run_as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run([*self._run_as, *args], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    def start(self) -> PostgresServer:
        self._check()
        # in /tmp itself, so the postgres user can reach it (pytest's tmp dirs are private to root)
        self.root = Path(tempfile.mkdtemp(prefix="recon-pg-"))
        if self._run_as:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        try:
            self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-locale", "--no-sync")
            # only 127.0.0.1 may connect, and only over TCP
            (self.data_dir / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
            for attempt in range(3):
                self.port = _free_port()
                options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
                           "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
                try:
                    self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l",
                              str(self.root / "server.log"), "-o", options, "-w", "-t", "60", "start")
                    break
                except RuntimeError:
                    if attempt == 2:  # the port may have been taken between probing and binding
                        raise
            self.create_database("recon")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run([*self._run_as, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m",
                            "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def url(self, database: str = "recon", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a fresh random name by default); returns its SQLAlchemy URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres", driver="postgresql"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
