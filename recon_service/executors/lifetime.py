"""Worker processes that die with the process that started them, even when it is killed with SIGKILL."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

LOG = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
WATCHDOG_INTERVAL = 0.5


def die_with_parent(parent_pid: int, use_pdeathsig: bool) -> None:
    """Call first in a child process: exit when ``parent_pid`` is gone. A watchdog thread compares
    ``os.getppid()`` twice a second; on Linux, with ``use_pdeathsig`` (only for children started from the parent's
    main thread: the signal follows the thread that forked), the kernel also sends SIGKILL when the parent dies."""
    if use_pdeathsig and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            LOG.warning("prctl(PR_SET_PDEATHSIG) unavailable; relying on the parent watchdog")
    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_INTERVAL)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
