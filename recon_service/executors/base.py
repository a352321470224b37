"""The executor interface: a set of workers that run :class:`~recon_service.executors.task.Task` s.

An executor keeps its own queue: :meth:`Executor.submit` never blocks, and a task goes to a worker when one is
free (so a Ray executor puts an input into the object store only when a worker takes it). The caller drives it
by :meth:`Executor.events`, which returns what happened since the last call:

* :class:`Started`: a worker took a task (``worker`` is ``host:pid``);
* :class:`Progress`: how far the task is (the job runner's fraction and step);
* :class:`Finished`: the task ended with an :class:`~recon_service.executors.task.Outcome`;
* :class:`Lost`: the worker died while running the task (killed, out of memory, its node gone). The executor
  has already started a replacement; whether to run the task again is the caller's decision.

Workers load their models once, when they start, and keep them for every task they run. ``close`` stops them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from recon_service.executors.task import Outcome, Task


@dataclass(frozen=True)
class Started:
    key: str
    worker: str


@dataclass(frozen=True)
class Progress:
    key: str
    fraction: float
    step: str


@dataclass(frozen=True)
class Finished:
    key: str
    worker: str
    outcome: Outcome


@dataclass(frozen=True)
class Lost:
    key: str
    worker: str
    reason: str


Event = Started | Progress | Finished | Lost


class ExecutorError(RuntimeError):
    """The executor cannot start or go on (no cluster, workers that cannot be placed); the message says why."""


class Executor(ABC):
    """``workers`` workers taking tasks from one queue; see the module text for the protocol."""

    kind: str = ""

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"an executor needs at least one worker, got {workers}")
        self.workers = workers
        self.startup_seconds = 0.0

    @abstractmethod
    def start(self) -> float:
        """Start the workers and wait until each has loaded its models; returns the seconds that took."""

    @abstractmethod
    def submit(self, task: Task) -> None:
        """Queue ``task``; its key must not be queued or running already."""

    @abstractmethod
    def events(self, timeout: float) -> list[Event]:
        """What happened since the last call, waiting up to ``timeout`` s for the first event."""

    @abstractmethod
    def cancel(self, key: str) -> None:
        """Ask the task's worker to stop it (it ends as a ``cancelled`` outcome); a queued task is dropped."""

    @abstractmethod
    def close(self) -> None:
        """Stop every worker (running tasks are abandoned)."""

    def __enter__(self) -> Executor:
        self.startup_seconds = self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
