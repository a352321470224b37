"""Worker processes: each takes the oldest queued job from the store, runs it and records how it ended.

``WorkerPool`` starts N processes (multiprocessing *spawn*: no state inherited from the server). Each opens
its own database connection and loops ``claim_next -> run_job -> finish``.

Lifetime rules:

* Workers die with their parent: a watchdog thread compares ``os.getppid()`` with the pool's pid twice a
  second and exits at once, and on Linux ``PR_SET_PDEATHSIG`` makes the kernel kill them when the parent
  dies (only for workers started from the main thread: the signal follows the *thread* that forked).
  So a kill -9 of the server leaves no worker running old jobs; :func:`recovery.recover_jobs` on the next
  start re-queues (or fails) what they were running.
* SIGTERM to a worker (or ``WorkerPool.stop``) means: take no new job. A job in progress may finish within
  the stop timeout; otherwise the worker is killed and the job stays ``running`` until the next start's
  recovery re-queues it (that run counts as an attempt).
* A worker that dies while the pool runs (out of memory, a crash in native code) is replaced; its job is
  re-queued, or failed once it has used ``max_attempts`` runs (``JobStore.recover_worker``).
* A worker whose job reports no progress for ``settings.job_stall_s`` seconds is taken as hung (a deadlock,
  a stuck device call): the pool kills it, and it is replaced and its job settled as for a worker that died.
* A job running longer than its pipeline's wall-clock limit (``settings.job_timeout_for``) is failed with
  that reason and its worker killed and replaced, so a job that reports progress but would run for hours
  cannot hold a worker; the next job runs on the new worker.
* SIGINT is ignored by workers: Ctrl-C in a terminal reaches the whole process group, and the server
  decides how to stop.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from recon_service.executors.lifetime import die_with_parent
from recon_service.executors.task import preload
from recon_service.settings import Settings

LOG = logging.getLogger(__name__)

def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --- inside a worker process -------------------------------------------------------------------------------

class ProgressReporter:
    """The progress callback of one job: writes at most one update per ``interval`` seconds (plus every
    change of stage), and raises :class:`JobCancelled` once the store says a cancellation was requested."""

    def __init__(self, store, job_id: str, interval: float = 0.25):  # noqa: ANN001 - JobStore
        self.store, self.job_id, self.interval = store, job_id, interval
        self.last_write = float("-inf")
        self.last_stage: str | None = None
        self.cancelled = False
        self.writes = 0

    def __call__(self, fraction: float, step: str) -> None:
        from recon_service.jobs.runner import JobCancelled

        if self.cancelled:
            raise JobCancelled()
        now = time.monotonic()
        stage = step.split(" ", 1)[0]
        if now - self.last_write < self.interval and stage == self.last_stage:
            return
        self.last_write, self.last_stage = now, stage
        self.writes += 1
        try:
            cancel = self.store.set_progress(self.job_id, fraction, step)
        except SQLAlchemyError as err:  # progress is best effort; the job goes on
            LOG.warning("job %s: progress not recorded (%s)", self.job_id, type(err).__name__)
            return
        if cancel:
            self.cancelled = True
            raise JobCancelled()


def _with_retries(action, what: str, tries: int = 5, wait: float = 1.0):  # noqa: ANN001, ANN202
    for attempt in range(tries):
        try:
            return action()
        except SQLAlchemyError as err:
            if attempt == tries - 1:
                raise
            LOG.warning("%s: database error (%s), retrying", what, type(err).__name__)
            time.sleep(wait)
    return None


def execute_job(context, job, progress_interval: float = 0.25, executor=None):  # noqa: ANN001, ANN201
    """Run one claimed job to its end state: succeeded, failed (with the reason) or cancelled. With
    ``executor`` (RECON_EXECUTOR=ray) the reconstruction runs on the executor's worker (``jobs.remote``); a job
    whose remote worker died is re-queued, or failed once it has used its attempts, as for a dead job worker."""
    from recon_service.jobs.remote import WorkerLost, run_job_on
    from recon_service.jobs.runner import JobCancelled, JobFailed, run_job
    from recon_service.jobs.store import JobState, result_flags

    store = context.store
    reporter = ProgressReporter(store, job.id, progress_interval)
    start = time.perf_counter()
    try:
        if executor is None:
            result = run_job(context.settings, job, reporter)
        else:
            result = run_job_on(executor, context.settings, job, reporter)
    except WorkerLost as lost:
        cause = f"the Ray worker running this job died ({lost})"
        LOG.error("job %s: %s", job.id, cause)
        return _with_retries(lambda: store.recover_worker(worker_id(), context.settings.max_attempts, cause),
                             f"re-queueing job {job.id}")
    except JobCancelled:
        LOG.info("job %s cancelled", job.id)
        return _with_retries(lambda: store.finish(job.id, JobState.CANCELLED), f"finishing job {job.id}")
    except JobFailed as failure:
        reason = failure.reason
        LOG.info("job %s failed after %.1f s", job.id, time.perf_counter() - start)
        return _with_retries(lambda: store.finish(job.id, JobState.FAILED, error=reason), f"finishing job {job.id}")
    except Exception as err:  # run_job turns errors into JobFailed; this catches a bug in that net itself
        LOG.exception("job %s: unexpected %s outside the job's error handling", job.id, type(err).__name__)
        internal = f"internal error ({type(err).__name__}); the service log has the details for job {job.id}"
        return _with_retries(lambda: store.finish(job.id, JobState.FAILED, error=internal),
                             f"finishing job {job.id}")
    LOG.info("job %s succeeded in %.1f s", job.id, time.perf_counter() - start)
    rows = _with_success(context, job.id, job.pipeline, bool(result_flags(result)))
    return _with_retries(lambda: store.finish(job.id, JobState.SUCCEEDED, result=result, also=rows),
                         f"finishing job {job.id}")


def _with_success(context, job_id: str, pipeline: str, flagged: bool = False):  # noqa: ANN001, ANN202
    """What a succeeded job adds in the transaction of its success: its result instances in the DICOMweb index,
    and the outbox rows of the PACS auto-delivery rules (held for approval when the result is flagged out of
    distribution)."""
    from recon_service.jobs.catalog import get_pipeline
    from recon_service.pacs.outbox import add_deliveries, planned_deliveries
    from recon_service.pacs.result_index import add_index, index_rows

    planned = planned_deliveries(context.pacs, pipeline, get_pipeline(pipeline).learned, flagged)
    try:
        indexed = index_rows(context.settings.data_dir, job_id)
    except Exception:  # the job's results stand; only DICOMweb will not list them
        LOG.exception("job %s: could not index its DICOM results for DICOMweb", job_id)
        indexed = []

    def add(session) -> None:  # noqa: ANN001
        add_index(session, indexed)
        add_deliveries(session, job_id, planned, "auto")

    return add


@dataclass(frozen=True)
class WorkerOptions:
    idle_sleep: float = 0.2
    progress_interval: float = 0.25
    warm_up: bool = False
    threads: int | None = None
    log_level: int = logging.INFO


def _configure_logging(level: int) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s [worker {os.getpid()}] "
                                                "%(name)s: %(message)s")
    root.setLevel(level)


def _remote_executor(settings: Settings, options: WorkerOptions):  # noqa: ANN202 - RayExecutor
    """This job worker's Ray actor (RECON_EXECUTOR=ray): one per job worker, so N job workers drive N actors on
    the cluster. It loads (and warms up) the models on its node; the job worker itself only relays."""
    from recon_service.executors.ray_cluster import RayExecutor

    executor = RayExecutor(1, address=settings.ray_address, gpus=settings.ray_worker_gpus, threads=options.threads,
                           warm_up_providers=settings.providers if options.warm_up else None)
    LOG.info("Ray worker started in %.1f s", executor.start())
    return executor


def worker_main(settings: Settings, parent_pid: int, use_pdeathsig: bool, options: WorkerOptions,
                ready: Any | None = None) -> None:
    """Entry point of one worker process (spawned by :class:`WorkerPool`); sets ``ready`` (an Event) once
    warmed up and taking jobs."""
    die_with_parent(parent_pid, use_pdeathsig)
    stopping = False

    def on_term(_signum, _frame) -> None:  # noqa: ANN001
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _configure_logging(options.log_level)
    from recon_service.context import ServiceContext

    context = ServiceContext.create(settings, migrate=False)
    me = worker_id()
    executor = _remote_executor(settings, options) if settings.executor == "ray" else None
    signal.signal(signal.SIGTERM, on_term)  # again: ray.init installs handlers of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if executor is None:
        preload(options.threads)
        if options.warm_up:
            from recon_service.jobs.warmup import warm_up_or_log

            warm_up_or_log(settings)
    LOG.info("worker %s ready", me)
    if ready is not None:
        ready.set()
    while not stopping:
        try:
            job = context.store.claim_next(me)
        except SQLAlchemyError as err:
            LOG.warning("worker %s: cannot reach the job store (%s)", me, type(err).__name__)
            time.sleep(1.0)
            continue
        if job is None:
            time.sleep(options.idle_sleep)
            continue
        LOG.info("worker %s took job %s (%s, attempt %d)", me, job.id, job.pipeline, job.attempts)
        execute_job(context, job, options.progress_interval, executor)
    if executor is not None:
        executor.close()
    context.engine.dispose()
    LOG.info("worker %s stopped", me)


# --- in the server process ---------------------------------------------------------------------------------

class WorkerPool:
    """N worker processes taking jobs from the store; replaces workers that die while it runs.

    Call :func:`recovery.recover_jobs` before :meth:`start` (once per service start), and :meth:`stop` on
    shutdown. ``warm_up`` (default ``settings.warmup``) makes each worker load and run the shipped models
    before it takes jobs. ``threads`` sets torch's intra-op threads per worker (default
    ``settings.worker_threads``, else the CPU cores shared out between the workers).
    """

    MONITOR_INTERVAL = 0.5
    STALL_CHECK_INTERVAL = 1.0

    def __init__(self, settings: Settings, concurrency: int | None = None, *, idle_sleep: float = 0.2,
                 progress_interval: float = 0.25, warm_up: bool | None = None, threads: int | None = None):
        self.settings = settings
        self.concurrency = int(concurrency or settings.workers)
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        cores = os.cpu_count() or 1
        self.options = WorkerOptions(idle_sleep, progress_interval,
                                     settings.warmup if warm_up is None else warm_up,
                                     threads or settings.worker_threads or max(1, cores // self.concurrency),
                                     logging.getLogger().level or logging.INFO)
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[BaseProcess | None] = [None] * self.concurrency
        self._ready: list[Any] = [None] * self.concurrency
        self._started_at = [0.0] * self.concurrency
        self._restarts = [0] * self.concurrency
        self._hung: set[int] = set()  # pids killed for a stalled job
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._store = None
        self._local_ray = False

    # public ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers and the thread that replaces dead ones."""
        if self._monitor is not None:
            raise RuntimeError("the worker pool is already started")
        self._stopping.clear()
        self._start_local_ray()
        with self._lock:
            for slot in range(self.concurrency):
                self._spawn(slot)
        self._monitor = threading.Thread(target=self._watch, name="worker-pool-monitor", daemon=True)
        self._monitor.start()
        # before multiprocessing's own exit handler, which would wait for the workers' current jobs
        atexit.register(self._stop_at_exit)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; wait up to ``timeout`` s for running jobs, then kill what is left (those jobs are
        re-queued by recovery on the next start)."""
        self._stopping.set()
        atexit.unregister(self._stop_at_exit)
        if self._monitor is not None:
            self._monitor.join()
            self._monitor = None
        with self._lock:
            procs = [p for p in self._procs if p is not None]
            for proc in procs:
                if proc.is_alive() and proc.pid is not None:
                    try:
                        os.kill(proc.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + timeout
            for proc in procs:
                proc.join(max(0.0, deadline - time.monotonic()))
            for proc in procs:
                if proc.is_alive():
                    LOG.warning("worker %d did not stop within %.0f s; killing it (its job is re-queued at the next "
                                "start)", proc.pid, timeout)
                    proc.kill()
                    proc.join(5)
            self._procs = [None] * self.concurrency
            self._ready = [None] * self.concurrency
        if self._store is not None:
            self._store.engine.dispose()
            self._store = None
        if self._local_ray:
            import ray

            ray.shutdown()
            self._local_ray = False
            self.settings = self.settings.model_copy(update={"ray_address": None})

    def _start_local_ray(self) -> None:
        """RECON_EXECUTOR=ray without a cluster address (RECON_RAY_ADDRESS, RAY_ADDRESS): a local Ray head in this
        process, one CPU per job worker, whose address the workers then join."""
        if self.settings.executor != "ray" or self.settings.ray_address or os.environ.get("RAY_ADDRESS"):
            return
        from recon_service.executors.ray_cluster import init_local_ray

        address = init_local_ray(self.concurrency, self.settings.ray_worker_gpus * self.concurrency)
        self._local_ray = True
        self.settings = self.settings.model_copy(update={"ray_address": address})
        LOG.info("started a local Ray (%d CPUs) at %s for the job workers", self.concurrency, address)

    def _stop_at_exit(self) -> None:
        if self._monitor is not None:
            self.stop(timeout=5.0)

    def alive(self) -> int:
        """How many worker processes are running."""
        with self._lock:
            return sum(1 for p in self._procs if p is not None and p.is_alive())

    def ready(self) -> int:
        """How many worker processes are running and have warmed up (they take jobs)."""
        with self._lock:
            return sum(1 for p, event in zip(self._procs, self._ready, strict=True)
                       if p is not None and p.is_alive() and event is not None and event.is_set())

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._procs if p is not None and p.pid is not None and p.is_alive()]

    def worker_ids(self) -> list[str]:
        host = socket.gethostname()
        return [f"{host}:{pid}" for pid in self.pids()]

    # internals ------------------------------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        use_pdeathsig = threading.current_thread() is threading.main_thread()
        ready = self._ctx.Event()
        proc = self._ctx.Process(target=worker_main, name=f"recon-worker-{slot}", daemon=True,
                                 args=(self.settings, os.getpid(), use_pdeathsig, self.options, ready))
        proc.start()
        self._procs[slot] = proc
        self._ready[slot] = ready
        self._started_at[slot] = time.monotonic()
        LOG.info("started worker %d (pid %d)", slot, proc.pid)

    def _job_store(self):  # noqa: ANN202
        if self._store is None:
            from recon_service.db import make_engine
            from recon_service.jobs.store import JobStore

            self._store = JobStore(make_engine(self.settings.sqlalchemy_url()))
        return self._store

    def _watch(self) -> None:
        last_stall_check = time.monotonic()
        while not self._stopping.wait(self.MONITOR_INTERVAL):
            if time.monotonic() - last_stall_check >= self.STALL_CHECK_INTERVAL:
                last_stall_check = time.monotonic()
                if self.settings.job_stall_s:
                    self._kill_hung_workers()
                self._stop_overdue_jobs()
            with self._lock:
                dead = [(slot, p) for slot, p in enumerate(self._procs) if p is not None and not p.is_alive()]
            for slot, proc in dead:
                self._replace(slot, proc)

    def _live_by_id(self) -> dict[str, BaseProcess]:
        """The running worker processes by their worker id (host:pid), as jobs record them."""
        host = socket.gethostname()
        with self._lock:
            return {f"{host}:{p.pid}": p for p in self._procs if p is not None and p.is_alive()}

    def _kill_hung_workers(self) -> None:
        by_id = self._live_by_id()
        try:
            stalled = self._job_store().stalled(list(by_id), self.settings.job_stall_s)
        except SQLAlchemyError as err:
            LOG.warning("stall check skipped: job store unreachable (%s)", type(err).__name__)
            return
        for job in stalled:
            proc = by_id[job.worker]
            LOG.error("job %s: no progress for %.0f s; killing its hung worker (pid %d)", job.id,
                      self.settings.job_stall_s, proc.pid)
            self._hung.add(proc.pid)
            proc.kill()
            proc.join(5)

    def _stop_overdue_jobs(self) -> None:
        """Fail every job that ran past its wall-clock limit and kill its worker (replaced by the monitor)."""
        from recon_service.jobs.store import JobState

        by_id = self._live_by_id()
        try:
            overdue = self._job_store().overdue(list(by_id), self.settings.job_timeout_for)
        except SQLAlchemyError as err:
            LOG.warning("time-limit check skipped: job store unreachable (%s)", type(err).__name__)
            return
        for job, limit in overdue:
            proc = by_id[job.worker]
            LOG.error("job %s ran past its limit of %.0f s; stopping it and replacing its worker (pid %d)", job.id,
                      limit, proc.pid)
            proc.kill()
            proc.join(5)
            setting = "RECON_JOB_TIMEOUTS" if job.pipeline in self.settings.job_timeouts else "RECON_JOB_TIMEOUT_S"
            reason = (f"the job ran past its time limit of {limit:g} s ({setting}) and was stopped; resubmit with "
                      "fewer iterations or a smaller input, or ask the operator for a longer limit")
            try:
                self._job_store().finish(job.id, JobState.FAILED, error=reason, worker=job.worker)
            except SQLAlchemyError as err:  # the dead worker's job is then settled by _replace / recovery
                LOG.error("could not fail overdue job %s (%s)", job.id, type(err).__name__)

    def _replace(self, slot: int, proc: BaseProcess) -> None:
        dead_id = f"{socket.gethostname()}:{proc.pid}"
        hung = proc.pid in self._hung
        self._hung.discard(proc.pid)
        if hung:
            cause = f"the worker running this job hung (no progress for {self.settings.job_stall_s:.0f} s)"
        else:
            cause = "the worker process running this job died"
            LOG.error("worker %d (pid %d) died with exit code %s", slot, proc.pid, proc.exitcode)
        try:
            for job_id, state in self._job_store().recover_worker(dead_id, self.settings.max_attempts, cause):
                LOG.warning("job %s of the dead worker: %s", job_id, state)
        except SQLAlchemyError as err:
            LOG.error("could not settle the jobs of worker %s (%s); recovery at the next start will",
                      dead_id, type(err).__name__)
        lived = time.monotonic() - self._started_at[slot]
        self._restarts[slot] = self._restarts[slot] + 1 if lived < 10 else 0
        delay = min(30.0, 0.5 * 2 ** self._restarts[slot]) if self._restarts[slot] else 0.0
        if delay and self._stopping.wait(delay):
            return
        with self._lock:
            if not self._stopping.is_set():
                self._spawn(slot)


# --- standalone ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m recon_service.jobs.worker``: a pool without the API (with the PACS outbox sender and the DICOM
    inbox when configured), until SIGTERM/SIGINT.

    Prints one JSON line ``{"pid": ..., "workers": [pids]}`` once the workers are started."""
    from recon_service.context import ServiceContext
    from recon_service.jobs.recovery import recover_jobs
    from recon_service.pacs.node import start_inbound, start_outbox_runner

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default RECON_WORKERS)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores/workers)")
    parser.add_argument("--recover", action="store_true",
                        help="re-queue or fail interrupted jobs first (only when no other pool serves this store)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    context = ServiceContext.create(settings)
    if args.recover:
        recover_jobs(context)
    pool = WorkerPool(settings, args.workers, threads=args.threads)
    signals: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: signals.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: signals.append(signum))
    pool.start()
    outbox = start_outbox_runner(context)  # this node also sends results to the PACS destinations
    inbound = start_inbound(context)  # and routes received series (and listens for C-STORE, when configured)
    print(json.dumps({"pid": os.getpid(), "workers": pool.pids()}), flush=True)
    while not signals:
        time.sleep(0.2)
    for service in (inbound, outbox):
        if service is not None:
            service.stop()
    pool.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
