"""The local executor: worker processes on this machine (multiprocessing *spawn*), one pipe each.

A worker loads the runner and the methods once, then takes one task at a time from its pipe and sends back
``started``, ``progress`` (at most every ``PROGRESS_INTERVAL`` s) and ``done`` messages. The driver waits on the
pipes and on the processes' sentinels together, so a worker that dies (SIGKILL, out of memory) is seen at once: its
task is reported :class:`~recon_service.executors.base.Lost` and a new worker takes its place. Workers die with
the driver (``lifetime.die_with_parent``).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any

from recon_service.executors.base import Event, Executor, ExecutorError, Finished, Lost, Progress, Started
from recon_service.executors.lifetime import die_with_parent
from recon_service.executors.task import Task

LOG = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.25
START_TIMEOUT_S = 300.0


def _worker_main(conn: Connection, cancel: Any, parent_pid: int, use_pdeathsig: bool, threads: int | None) -> None:
    from recon_service.executors.task import preload, run_task
    from recon_service.jobs.runner import JobCancelled

    die_with_parent(parent_pid, use_pdeathsig)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the driver decides
    preload(threads)
    conn.send(("ready", f"{socket.gethostname()}:{os.getpid()}"))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        cancel.clear()
        last = float("-inf")

        def progress(fraction: float, step: str, key: str = task.key) -> None:
            nonlocal last
            if cancel.is_set():
                raise JobCancelled()
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL:
                last = now
                conn.send(("progress", key, fraction, step))

        conn.send(("started", task.key))
        conn.send(("done", task.key, run_task(task, None, progress)))


class _Slot:
    def __init__(self, proc: Any, conn: Connection, cancel: Any):
        self.proc, self.conn, self.cancel = proc, conn, cancel
        self.worker = ""
        self.ready = False
        self.task: Task | None = None


class LocalExecutor(Executor):
    """``workers`` processes on this machine; ``threads`` torch threads each (default: the cores shared out)."""

    kind = "local"

    def __init__(self, workers: int, threads: int | None = None):
        super().__init__(workers)
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self._ctx = multiprocessing.get_context("spawn")
        self._slots: list[_Slot] = []
        self._queue: collections.deque[Task] = collections.deque()
        self._events: list[Event] = []

    def _spawn(self) -> _Slot:
        ours, theirs = self._ctx.Pipe()
        cancel = self._ctx.Event()
        use_pdeathsig = threading.current_thread() is threading.main_thread()
        proc = self._ctx.Process(target=_worker_main, name="recon-batch-worker", daemon=True,
                                 args=(theirs, cancel, os.getpid(), use_pdeathsig, self.threads))
        proc.start()
        theirs.close()
        return _Slot(proc, ours, cancel)

    def start(self) -> float:
        began = time.perf_counter()
        self._slots = [self._spawn() for _ in range(self.workers)]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(s.ready for s in self._slots):
            if time.monotonic() > deadline:
                self.close()
                raise ExecutorError(f"local workers did not start within {START_TIMEOUT_S:.0f} s")
            self._collect(1.0)
        return time.perf_counter() - began

    def submit(self, task: Task) -> None:
        self._queue.append(task)
        self._dispatch()

    def _dispatch(self) -> None:
        for slot in self._slots:
            if not self._queue:
                return
            if slot.ready and slot.task is None:
                slot.task = self._queue.popleft()
                slot.conn.send(slot.task)

    def _collect(self, timeout: float) -> None:
        by_handle: dict[Any, _Slot] = {}
        for slot in self._slots:
            by_handle[slot.conn] = slot
            by_handle[slot.proc.sentinel] = slot
        for handle in wait(list(by_handle), timeout):
            slot = by_handle[handle]
            if handle is slot.conn:
                self._drain(slot)
            elif slot in self._slots:
                self._drain(slot)  # what it sent before dying still counts
                if slot.task is not None or not slot.proc.is_alive():
                    self._replace(slot)

    def _drain(self, slot: _Slot) -> None:
        try:
            while slot.conn.poll():
                message = slot.conn.recv()
                self._handle(slot, message)
        except (EOFError, OSError):
            pass

    def _handle(self, slot: _Slot, message: tuple) -> None:
        kind = message[0]
        if kind == "ready":
            slot.worker, slot.ready = message[1], True
        elif kind == "started":
            self._events.append(Started(message[1], slot.worker))
        elif kind == "progress":
            self._events.append(Progress(message[1], message[2], message[3]))
        elif kind == "done":
            slot.task = None
            self._events.append(Finished(message[1], slot.worker, message[2]))

    def _replace(self, slot: _Slot) -> None:
        slot.proc.join(1)
        if slot.proc.is_alive():
            return
        code = slot.proc.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        worker = slot.worker or f"{socket.gethostname()}:{slot.proc.pid}"
        LOG.error("local worker %s died (%s)", worker, how)
        if slot.task is not None:
            self._events.append(Lost(slot.task.key, worker, f"the worker running it died ({how})"))
        slot.conn.close()
        index = self._slots.index(slot)
        self._slots[index] = self._spawn()

    def events(self, timeout: float) -> list[Event]:
        if not self._events:
            self._collect(timeout)
        self._collect(0)
        self._dispatch()
        events, self._events = self._events, []
        return events

    def cancel(self, key: str) -> None:
        self._queue = collections.deque(t for t in self._queue if t.key != key)
        for slot in self._slots:
            if slot.task is not None and slot.task.key == key:
                slot.cancel.set()

    def close(self) -> None:
        for slot in self._slots:
            try:
                slot.conn.send(None)
            except (OSError, ValueError):
                pass
        for slot in self._slots:
            slot.proc.join(2)
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join(5)
            slot.conn.close()
        self._slots = []
