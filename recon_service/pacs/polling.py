"""A background thread that calls ``run_once()`` until stopped, waiting ``poll_s`` whenever a call found no work."""

from __future__ import annotations

import logging
import threading

LOG = logging.getLogger(__name__)


class PollingThread:
    name = "poller"
    poll_s = 1.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        """Do what is due; return whether there was anything (then the next call comes at once)."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # the database away for a moment, say: try again at the next poll
                LOG.exception("%s: poll failed", self.name)
                worked = False
            if not worked:
                self._stop.wait(self.poll_s)
