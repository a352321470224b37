"""The Ray executor: one Ray actor per worker, on a Ray cluster (``address``, else ``RAY_ADDRESS``) or, with
neither, on a local Ray this executor starts and stops.

Each actor loads the runner and the methods once (and keeps the models it loads) and runs one task at a time. An
input travels to it through Ray's object store (``ray.put`` of the file's bytes when a worker takes the task) and
the result files come back the same way, so the nodes need no shared disk. Actors are threaded
(``max_concurrency=2``), so the driver can ask a busy actor for its progress and tell it to cancel. An actor that
dies (its process killed, its node gone) fails its call with ``RayActorError``: the task is reported
:class:`~recon_service.executors.base.Lost` and a new actor takes the dead one's place.

GPU resources: each actor asks for ``gpus`` GPUs (``num_gpus``), so Ray places GPU workers on GPU nodes only.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from recon_service.executors.base import Event, Executor, ExecutorError, Finished, Lost, Progress, Started
from recon_service.executors.task import Task

LOG = logging.getLogger(__name__)
START_TIMEOUT_S = 300.0
PROGRESS_POLL_S = 0.5
INSTALL_HINT = "Ray is not installed: pip install 'recon-service[ray]' (or make setup)"
QUIET = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}


def import_ray():  # noqa: ANN201 - the ray module
    try:
        import ray
    except ImportError as err:
        raise ExecutorError(f"{INSTALL_HINT} ({err})") from err
    return ray


def init_local_ray(cpus: int, gpus: float = 0.0) -> str:
    """Start a Ray on this machine with ``cpus`` CPUs (and ``gpus`` GPUs), quiet: no dashboard, no worker logs
    relayed to this process (task failures come back as outcomes with their reason). Returns its address."""
    ray = import_ray()
    ray.init(num_cpus=cpus, num_gpus=int(gpus) or None, **QUIET)
    return ray.get_runtime_context().gcs_address


def _check_reachable(address: str) -> None:
    """Fail fast on a ``host:port`` nobody listens on (``ray.init`` would retry for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", ray:// client addresses: Ray's own checks
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ExecutorError(f"cannot join the Ray cluster at {address}: nothing answers there "
                            f"({err.strerror or err}); start it with `ray start --head`, or check --address / "
                            "RAY_ADDRESS") from None


class ReconActor:
    """What runs inside one Ray worker process (wrapped by ``ray.remote`` in :meth:`RayExecutor.start`)."""

    def __init__(self, threads: int | None, warm_up_providers: str | None = None):
        from recon_service.executors.task import preload

        preload(threads)
        if warm_up_providers is not None:  # the service's warm-up, on this worker: its models load here
            import tempfile

            from recon_service.jobs.warmup import warm_up_or_log
            from recon_service.settings import Settings

            warm_up_or_log(Settings(data_dir=Path(tempfile.gettempdir()), providers=warm_up_providers))
        self._progress: tuple[str, float, str] | None = None
        self._cancel = threading.Event()

    def identity(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def run(self, task: Task, payload: bytes):  # noqa: ANN201 - Outcome
        from recon_service.executors.task import run_task
        from recon_service.jobs.runner import JobCancelled

        self._cancel.clear()

        def progress(fraction: float, step: str) -> None:
            if self._cancel.is_set():
                raise JobCancelled()
            self._progress = (task.key, fraction, step)

        try:
            return run_task(task, payload, progress)
        finally:
            self._progress = None

    def progress(self) -> tuple[str, float, str] | None:
        return self._progress

    def cancel(self) -> None:
        self._cancel.set()


class _Actor:
    def __init__(self, handle: Any, ready_ref: Any):
        self.handle, self.ready_ref = handle, ready_ref
        self.worker = ""
        self.task: Task | None = None
        self.ref: Any = None
        self.reported: tuple[str, float, str] | None = None  # the last progress passed on


class RayExecutor(Executor):
    """``workers`` Ray actors with ``cpus`` CPUs and ``gpus`` GPUs each; ``threads`` torch threads per actor
    (default: the CPUs it asks for). ``warm_up_providers`` (the service's RECON_PROVIDERS) makes each actor load
    and run the shipped models before it takes tasks. Without a cluster address, a local Ray is started with what
    the workers ask for."""

    kind = "ray"

    def __init__(self, workers: int, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0,
                 threads: int | None = None, warm_up_providers: str | None = None,
                 start_timeout: float = START_TIMEOUT_S):
        super().__init__(workers)
        self.warm_up_providers = warm_up_providers
        self.start_timeout = start_timeout
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.cpus, self.gpus = cpus, gpus
        self.threads = threads or max(1, int(cpus))
        self._ray: Any = None
        self._remote: Any = None
        self._started_ray = False
        self._actors: list[_Actor] = []
        self._queue: collections.deque[Task] = collections.deque()
        self._events: list[Event] = []
        self._last_poll = 0.0

    # --- start and stop --------------------------------------------------------------------------------------

    def start(self) -> float:
        began = time.perf_counter()
        ray = self._ray = import_ray()
        if not ray.is_initialized():
            if self.address:
                _check_reachable(self.address)
                try:
                    ray.init(address=self.address, **QUIET)
                except (ConnectionError, RuntimeError) as err:
                    raise ExecutorError(
                        f"cannot join the Ray cluster at {self.address}: {str(err).splitlines()[0]} (is it running? "
                        "a cluster with token authentication, as `ray start` makes, also needs RAY_AUTH_MODE=token "
                        "and its token in ~/.ray/auth_token or RAY_AUTH_TOKEN)") from None
            else:  # a local Ray just for this run, sized for the workers
                init_local_ray(max(1, int(round(self.workers * self.cpus))), self.gpus * self.workers)
            self._started_ray = True
        self._remote = ray.remote(ReconActor).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_concurrency=2, max_restarts=0, max_task_retries=0)
        self._actors = [self._new_actor() for _ in range(self.workers)]
        deadline = time.monotonic() + self.start_timeout
        for actor in self._actors:
            self._await_ready(actor, deadline)
        return time.perf_counter() - began

    def _new_actor(self) -> _Actor:
        handle = self._remote.remote(self.threads, self.warm_up_providers)
        return _Actor(handle, handle.identity.remote())

    def _await_ready(self, actor: _Actor, deadline: float) -> None:
        ray = self._ray
        ready, _ = ray.wait([actor.ready_ref], timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            have = ray.available_resources()
            self.close()
            raise ExecutorError(
                f"Ray could not start {self.workers} worker(s) with {self.cpus:g} CPU and {self.gpus:g} GPU each "
                f"within {self.start_timeout:.0f} s; the cluster has free: "
                f"{ {k: v for k, v in have.items() if not k.startswith('node:')} }")
        try:
            actor.worker = ray.get(actor.ready_ref)
        except Exception as err:
            self.close()
            raise ExecutorError(f"a Ray worker failed to start: {err}") from err

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for actor in self._actors:
            try:
                ray.kill(actor.handle)
            except Exception:  # already gone
                pass
        self._actors = []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._ray = None

    # --- tasks ----------------------------------------------------------------------------------------------

    def submit(self, task: Task) -> None:
        self._queue.append(task)
        self._dispatch()

    def _dispatch(self) -> None:
        for actor in self._actors:
            if not self._queue:
                return
            if actor.task is None and actor.worker:
                task = actor.task = self._queue.popleft()
                payload = self._ray.put(task.source.read_bytes())
                actor.ref = actor.handle.run.remote(task, payload)
                self._events.append(Started(task.key, actor.worker))

    def events(self, timeout: float) -> list[Event]:
        ray = self._ray
        self._dispatch()
        refs = {a.ref: a for a in self._actors if a.ref is not None}
        if not self._events:  # wait for a result, but no longer than the next progress poll
            if refs:
                ray.wait(list(refs), num_returns=1, timeout=min(timeout, PROGRESS_POLL_S))
            else:
                time.sleep(min(timeout, PROGRESS_POLL_S))
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0) if refs else ([], [])
        for ref in ready:
            self._finish(refs[ref])
        if time.monotonic() - self._last_poll >= PROGRESS_POLL_S:
            self._last_poll = time.monotonic()
            self._poll_progress()
        self._dispatch()
        events, self._events = self._events, []
        return events

    def _finish(self, actor: _Actor) -> None:
        ray = self._ray
        task, ref = actor.task, actor.ref
        actor.task, actor.ref = None, None
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as err:  # RayActorError: its worker died; others: the result lost with its node
            self._lost(actor, task, err)
            return
        self._events.append(Finished(task.key, actor.worker, outcome))

    def _lost(self, actor: _Actor, task: Task, err: BaseException) -> None:
        LOG.error("Ray worker %s died while running %s: %s", actor.worker, task.key, type(err).__name__)
        self._events.append(Lost(task.key, actor.worker, f"the Ray worker running it died ({type(err).__name__})"))
        self._replace(actor)

    def _replace(self, actor: _Actor) -> None:
        try:
            self._ray.kill(actor.handle)
        except Exception:
            pass
        index = self._actors.index(actor)
        fresh = self._actors[index] = self._new_actor()
        self._await_ready(fresh, time.monotonic() + self.start_timeout)

    def _poll_progress(self) -> None:
        ray = self._ray
        busy = {a.handle.progress.remote(): a for a in self._actors if a.task is not None}
        if not busy:
            return
        ready, _ = ray.wait(list(busy), num_returns=len(busy), timeout=1.0)
        for ref in ready:
            try:
                reported = ray.get(ref)
            except ray.exceptions.RayError:
                continue  # a dead actor is seen when its run call fails
            actor = busy[ref]
            # only news: a task that stops reporting must look stalled to the caller, as on a local worker
            if reported and actor.task is not None and reported[0] == actor.task.key and reported != actor.reported:
                actor.reported = reported
                self._events.append(Progress(*reported))

    def cancel(self, key: str) -> None:
        self._queue = collections.deque(t for t in self._queue if t.key != key)
        for actor in self._actors:
            if actor.task is not None and actor.task.key == key:
                actor.handle.cancel.remote()
