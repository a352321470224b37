"""Running a batch: every input through one pipeline on an executor, outputs as the service writes them.

Each file's outputs go to ``OUT/<key>/`` (recon.nii.gz, preview.png, metrics.json with a reference, the DICOM
series in dicom/ and series.zip, and a diffusion method's uncertainty map), published whole
(``executors.task.publish_files``) before its ``done`` line goes to ``OUT/status.jsonl`` (``batch.status``). A
rerun skips finished files. A file that fails is recorded with its reason and the others go on; a file whose
worker dies is run again, up to ``max_attempts`` runs. ``OUT/summary.json`` holds the final table.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recon_service.batch.inputs import BatchItem
from recon_service.batch.status import StatusLog
from recon_service.executors.base import Executor, Finished, Lost, Started
from recon_service.executors.task import Task, publish_files, single_input_job
from recon_service.jobs.store import result_flags

METRICS = ("psnr", "ssim", "nmse")
SUMMARY_FILE = "summary.json"


@dataclass
class BatchReport:
    """How a batch ended: one row per input (status done / failed / skipped), the seconds the executor took to
    start (workers up, models loaded) and to process the files, and the slices reconstructed in this run."""

    pipeline: str
    executor: str
    workers: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    startup_seconds: float = 0.0
    seconds: float = 0.0
    slices: int = 0

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)

    @property
    def slices_per_second(self) -> float | None:
        return self.slices / self.seconds if self.seconds > 0 and self.slices else None

    def mean_metrics(self) -> dict[str, float]:
        with_metrics = [r["metrics"] for r in self.rows if r["status"] in ("done", "skipped") and r.get("metrics")]
        return {m: sum(x[m] for x in with_metrics) / len(with_metrics) for m in METRICS
                if with_metrics and all(m in x for x in with_metrics)}

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "executor": self.executor, "workers": self.workers,
                "done": self.count("done"), "failed": self.count("failed"), "skipped": self.count("skipped"),
                "startup_seconds": self.startup_seconds, "seconds": self.seconds, "slices": self.slices,
                "slices_per_second": self.slices_per_second, "mean_metrics": self.mean_metrics(), "files": self.rows}


def _outputs(key: str, result: dict[str, Any]) -> dict[str, str]:
    """The job's result files (relative to its data directory) as paths relative to the batch's output folder."""
    return {fmt: f"{key}/{Path(path).name}" for fmt, path in (result.get("files") or {}).items()}


def _clear_staging(out: Path) -> None:
    for leftover in out.glob(".*.partial*"):  # publish_files stages under .KEY.partial-PID
        shutil.rmtree(leftover, ignore_errors=True)


def run_batch(items: list[BatchItem], pipeline: str, out: Path, executor: Executor,
              params: dict[str, Any] | None = None, *, max_attempts: int = 3, providers: str = "",
              on_file: Callable[[dict[str, Any]], None] | None = None,
              on_start: Callable[[int, int], None] | None = None) -> BatchReport:
    """Reconstruct ``items`` with ``pipeline`` on ``executor`` (started and closed here) into ``out``.

    ``params`` apply to every file (an item's own ``params`` override them); they are checked before any work.
    ``on_start(todo, skipped)`` is called once the finished files are known, ``on_file(row)`` after each file.
    """
    from recon_service.jobs.catalog import get_pipeline

    info = get_pipeline(pipeline)
    merged = {item.key: {**(params or {}), **item.params} for item in items}
    for item in items:
        try:
            info.check(merged[item.key])
        except ValueError as err:
            raise ValueError(f"{item.path}: {err}") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear_staging(out)
    log = StatusLog(out)
    finished = log.finished(out)
    report = BatchReport(pipeline, executor.kind, executor.workers)
    todo = []
    for item in items:
        if item.key in finished:
            earlier = finished[item.key]
            report.rows.append({"key": item.key, "input": str(item.path), "status": "skipped",
                                "slices": earlier.get("slices"), "seconds": earlier.get("seconds"),
                                "metrics": earlier.get("metrics"), "outputs": earlier.get("outputs")})
        else:
            todo.append(item)
    if not todo:
        if on_start is not None:
            on_start(0, len(items))
        return _finish(report, items, out)
    tasks = {item.key: Task(item.key, single_input_job(item.key, pipeline, item.path, merged[item.key]), item.path,
                            providers) for item in todo}
    by_key = {item.key: item for item in todo}
    attempts = dict.fromkeys(tasks, 1)
    rows: dict[str, dict[str, Any]] = {}
    with executor:
        report.startup_seconds = executor.startup_seconds
        if on_start is not None:  # after the workers are up, so the bar's rate and ETA are the files' own
            on_start(len(todo), len(items) - len(todo))
        began = time.perf_counter()
        for task in tasks.values():
            executor.submit(task)
        while len(rows) < len(todo):
            for event in executor.events(0.5):
                item = by_key[event.key]
                if isinstance(event, Started):
                    log.append(item.key, str(item.path), "started", attempt=attempts[item.key], worker=event.worker)
                elif isinstance(event, Lost):
                    if attempts[item.key] < max_attempts:
                        log.append(item.key, str(item.path), "retry", attempt=attempts[item.key],
                                   worker=event.worker, reason=event.reason)
                        attempts[item.key] += 1
                        executor.submit(tasks[item.key])
                    else:
                        reason = f"{event.reason}, {attempts[item.key]} times; not tried again"
                        rows[item.key] = log.append(item.key, str(item.path), "failed", attempt=attempts[item.key],
                                                    reason=reason)
                        _notify(on_file, rows[item.key])
                elif isinstance(event, Finished):
                    rows[item.key] = _settle(log, out, item, event, attempts[item.key])
                    if rows[item.key]["status"] == "done":
                        report.slices += int(rows[item.key].get("slices") or 0)
                    _notify(on_file, rows[item.key])
        report.seconds = time.perf_counter() - began
    report.rows.extend(rows[item.key] for item in todo)
    return _finish(report, items, out)


def _finish(report: BatchReport, items: list[BatchItem], out: Path) -> BatchReport:
    order = {item.key: i for i, item in enumerate(items)}
    report.rows.sort(key=lambda r: order[r["key"]])
    (out / SUMMARY_FILE).write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    return report


def _notify(on_file: Callable[[dict[str, Any]], None] | None, row: dict[str, Any]) -> None:
    if on_file is not None:
        on_file(row)


def _settle(log: StatusLog, out: Path, item: BatchItem, event: Finished, attempt: int) -> dict[str, Any]:
    outcome = event.outcome
    if outcome.status != "ok":
        reason = outcome.reason or "cancelled"
        return log.append(item.key, str(item.path), "failed", attempt=attempt, worker=event.worker, reason=reason)
    result = outcome.result or {}
    provenance = result.get("provenance") or {}
    publish_files(outcome.files, out / item.key)
    flags = result_flags(result)
    extra = {"flags": flags} if flags else {}
    return log.append(item.key, str(item.path), "done", attempt=attempt, worker=event.worker,
                      seconds=provenance.get("seconds"), slices=provenance.get("slices"),
                      outputs=_outputs(item.key, result), metrics=result.get("metrics"), **extra)


def format_report(report: BatchReport) -> str:
    """The end-of-batch table: one row per file, then the totals, the mean metrics and the failures."""
    has_metrics = any(r.get("metrics") for r in report.rows)
    head = ["file", "status", "slices", "seconds"] + ([m.upper() for m in METRICS] if has_metrics else [])
    table = [head]
    for r in report.rows:
        metrics = r.get("metrics") or {}
        seconds = r.get("seconds")
        row = [r["key"], r["status"], str(r.get("slices") or "-"), f"{seconds:.2f}" if seconds else "-"]
        if has_metrics:
            row += [f"{metrics[m]:.4f}" if m in metrics else "-" for m in METRICS]
        table.append(row)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    rate = report.slices_per_second
    lines.append(f"{report.count('done')} done, {report.count('failed')} failed, {report.count('skipped')} skipped "
                 f"(finished earlier); {report.slices} slices in {report.seconds:.1f} s"
                 + (f" ({rate:.2f} slices/s)" if rate else "")
                 + f" on {report.workers} {report.executor} worker(s), started in {report.startup_seconds:.1f} s")
    means = report.mean_metrics()
    if means:
        lines.append("mean " + "  ".join(f"{k.upper()} {v:.4f}" for k, v in means.items()))
    for r in report.rows:
        if r["status"] == "failed":
            lines.append(f"failed: {r['input']}: {r.get('reason')}")
        if r.get("flags"):
            lines.append(f"out of distribution: {r['input']}: {'; '.join(r['flags'])}")
    return "\n".join(lines)


def write_progress(stream=sys.stderr):  # noqa: ANN001, ANN201
    """A tqdm bar over the files to do, with the rate (files/s), the ETA and the slices per second so far."""
    from tqdm import tqdm

    state: dict[str, Any] = {}

    def on_start(todo: int, skipped: int) -> None:
        state["bar"] = tqdm(total=todo, unit="file", file=stream, desc="batch", dynamic_ncols=True)
        state["began"], state["slices"] = time.perf_counter(), 0
        if skipped:
            state["bar"].write(f"resuming: {skipped} file(s) finished earlier are skipped", file=stream)

    def on_file(row: dict[str, Any]) -> None:
        bar = state["bar"]
        state["slices"] += int(row.get("slices") or 0) if row["status"] == "done" else 0
        elapsed = time.perf_counter() - state["began"]
        bar.set_postfix_str(f"{state['slices'] / elapsed:.2f} slices/s" if elapsed > 0 else "", refresh=False)
        bar.update(1)
        if row["status"] == "failed":
            bar.write(f"failed: {row['input']}: {row.get('reason')}", file=stream)

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return on_start, on_file, close
