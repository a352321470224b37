"""One unit of work for an executor, and how a worker runs it wherever it lives.

A :class:`Task` is a job (``JobRecord``: pipeline, parameters, study, its raw-data input) and the path of that
input on the machine that submits it. The worker runs it with the service's own job runner
(``recon_service.jobs.runner.run_job``) in a scratch data directory of its own, so a batch file, a service job on
a local worker and one on a Ray node are reconstructed and written by the same code; the result files come back
as bytes (:class:`Outcome`) and the submitter publishes them (:func:`publish_files`), so no disk is shared.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from pipelines.io.durable import publish_dir
from recon_service.jobs.store import InputRecord, JobRecord

if TYPE_CHECKING:
    from recon_service.jobs.runner import ProgressFn

INPUTS_DIR = "inputs"


@dataclass(frozen=True)
class Task:
    """``job`` to reconstruct; ``source`` is its raw-data file on the submitter's machine. ``providers`` is the
    ONNX Runtime preference (RECON_PROVIDERS) the worker applies; ``review_panes`` adds a learned method's
    comparison images (the service's review tool)."""

    key: str
    job: JobRecord
    source: Path
    providers: str = ""
    review_panes: bool = False

    @property
    def filename(self) -> str:
        return self.job.inputs[0].filename if self.job.inputs else self.source.name


@dataclass(frozen=True)
class Outcome:
    """How a task ended: ``ok`` with the job's ``result`` and its result ``files`` (path relative to the job's
    result folder -> bytes), ``failed`` with a ``reason`` for the person who submitted it, or ``cancelled``."""

    status: Literal["ok", "failed", "cancelled"]
    result: dict[str, Any] | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    reason: str | None = None

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.files.values())


def preload(threads: int | None = None) -> None:
    """Ready a worker before it takes tasks: torch's intra-op threads (when given), and the runner, the readers
    and every method imported, so no task pays for (or, to a stall watchdog, looks hung during) the imports."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    import pipelines.io.detect  # noqa: F401
    import pipelines.pipeline  # noqa: F401
    import recon_service.jobs.runner  # noqa: F401
    from pipelines.reconstructors import available

    available()


def run_task(task: Task, payload: bytes | None, progress: ProgressFn) -> Outcome:
    """Run ``task`` in a scratch data directory and return its outcome; the raw input is ``payload`` (its bytes,
    sent through an object store) or, when None, read from ``task.source`` (a disk the submitter shares).

    ``progress`` may raise ``JobCancelled`` to stop the task; every error ends as a ``failed`` outcome with the
    job runner's reason."""
    from recon_service.jobs.results import RESULTS_DIR
    from recon_service.jobs.runner import JobCancelled, JobFailed, run_job
    from recon_service.settings import Settings

    scratch = Path(tempfile.mkdtemp(prefix="recon-task-"))
    try:
        record = task.job.inputs[0]
        local = scratch / INPUTS_DIR / PurePosixPath(record.path).name
        local.parent.mkdir(parents=True)
        if payload is None:
            shutil.copyfile(task.source, local)
        else:
            local.write_bytes(payload)
        kind = record.kind
        if not kind:  # a batch file: its layout says which reader
            from pipelines.data import InputError
            from pipelines.io.detect import detect_layout

            try:
                kind = detect_layout(local)[0]
            except (InputError, ValueError) as err:
                problem = err.problem if isinstance(err, InputError) else str(err)
                return Outcome("failed", reason=f"input {record.filename!r}: {problem}".replace(str(local),
                                                                                                record.filename))
        job = dataclasses.replace(task.job, inputs=(dataclasses.replace(
            record, path=local.relative_to(scratch).as_posix(), kind=kind),))
        settings = Settings(data_dir=scratch, providers=task.providers)
        try:
            result = run_job(settings, job, progress, review_panes=task.review_panes)
        except JobCancelled:
            return Outcome("cancelled")
        except JobFailed as failure:
            return Outcome("failed", reason=failure.reason)
        folder = scratch / RESULTS_DIR / job.id
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return Outcome("ok", result=result, files=files)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def publish_files(files: dict[str, bytes], final: Path) -> Path:
    """Write ``files`` (relative path -> bytes) as the folder ``final``: into a staging folder next to it, fsynced,
    then renamed into place (an older ``final`` is replaced), so a reader never sees half a result."""
    final = Path(final)
    staging = final.with_name(f".{final.name}.partial-{os.getpid()}")  # the name jobs.results stages under
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name, data in files.items():
        path = staging / name
        if not path.resolve().is_relative_to(staging.resolve()):
            raise ValueError(f"result file {name!r} lies outside its folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return publish_dir(staging, final)


def single_input_job(key: str, pipeline: str, source: Path, params: dict[str, Any] | None = None,
                     study: dict[str, Any] | None = None) -> JobRecord:
    """A job record for one raw-data file outside the service's database (a batch file); the worker reads its
    format from the file."""
    from datetime import UTC, datetime

    from recon_service.jobs.store import JobState

    record = InputRecord(source.name, f"{INPUTS_DIR}/{source.name}", 0, "", "")
    return JobRecord(id=key, pipeline=pipeline, params=dict(params or {}), study=dict(study or {}),
                     state=JobState.RUNNING, progress=0.0, step=None, error=None, owner="batch",
                     idempotency_key=None, attempts=1, worker=None, cancel_requested=False, result=None,
                     created_at=datetime.now(UTC), started_at=None, finished_at=None, heartbeat_at=None,
                     inputs=(record,))
