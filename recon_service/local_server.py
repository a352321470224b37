"""Run ``recon serve`` as a child process on loopback: for ``make demo``, the load benchmark and the tests."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from recon_service.client import ReconClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """``with LocalServer(data_dir) as server: server.client().submit(...)``.

    The server gets a fresh admin token (``server.token``) unless ``tokens`` (RECON_API_TOKENS syntax) is
    given; its output goes to ``data_dir/server.log``. ``kill()`` sends SIGKILL, ``start()`` starts it again
    on the same port and data directory.

    The child inherits this environment (RECON_PROVIDERS, ...) except RECON_DATABASE_URL: a database URL of
    the calling shell must not send a demo's or a test's jobs into another database (pass one in ``env``).
    """

    def __init__(self, data_dir: Path, port: int | None = None, workers: int = 1, tokens: str | None = None,
                 env: dict[str, str] | None = None, ready_timeout: float = 180.0):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.workers = workers
        self.token = secrets.token_urlsafe(24)
        self.tokens = tokens if tokens is not None else f"{self.token}:admin"
        self.extra_env = env or {}
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def client(self, token: str | None = None) -> ReconClient:
        return ReconClient(self.url, token or self.token)

    def start(self, wait: bool = True) -> LocalServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parents[1]
        inherited = {k: v for k, v in os.environ.items() if k != "RECON_DATABASE_URL"}
        env = {**inherited, "RECON_DATA_DIR": str(self.data_dir), "RECON_API_TOKENS": self.tokens,
               "RECON_WORKERS": str(self.workers), "PYTHONPATH": str(root), **self.extra_env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.process = subprocess.Popen(
            [sys.executable, "-m", "recon_service.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
        log.close()
        if wait:
            self.wait_ready()
        return self

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def wait_ready(self) -> None:
        """Until /readyz answers 200 (models warmed up, workers running)."""
        with ReconClient(self.url) as probe:
            self._wait(probe.ready, "ready")

    def wait_healthy(self) -> None:
        """Until /healthz answers 200 (the app started; warm-up may still be running)."""
        with ReconClient(self.url) as probe:
            self._wait(probe.healthy, "healthy")

    def _wait(self, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not check():
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"recon serve exited with {self.process.returncode}; see {self.log_path}:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            if time.monotonic() > deadline:
                raise TimeoutError(f"recon serve not {what} after {self.ready_timeout:.0f} s; see {self.log_path}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the server process alone (its workers must notice and exit by themselves)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
