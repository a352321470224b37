"""Running one job: its raw-data input -> reconstruction -> result files, reporting progress on the way.

Progress is reported as a fraction of the whole job: loading 0-5 %, reconstruction 5-90 % (per slice for
MRI, per iteration for iterative CT), writing 90-100 %. The progress callback may raise
:class:`JobCancelled`; it passes through untouched so the worker ends the job as cancelled.

Every other problem ends as :class:`JobFailed` with a reason a person can act on: bad input names the
client's file name (``input 'brain.h5': not a readable HDF5 file``), never a server path; unexpected errors
give the exception type and stage only, and the traceback goes to the log with input names and the data
directory replaced by placeholders.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.confidence import DICOM_LT, FLAG_NOTE, consistency_summary, flag_text
from pipelines.data import InputError
from pipelines.io.dicom_series import Provenance
from pipelines.io.dicom_study import StudyInfo
from recon_service.jobs.catalog import PipelineInfo, get_pipeline
from recon_service.jobs.inputs import study_info
from recon_service.jobs.results import DicomSeries, write_results
from recon_service.jobs.store import InputRecord, JobRecord
from recon_service.settings import Settings

LOG = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]

LOAD_END = 0.05
RECON_END = 0.90
MAX_REASON = 500

# learned methods run as ONNX Runtime engines in the service (the method's own default is the torch module)
SERVICE_ENGINE = "onnx"


class JobCancelled(Exception):
    """Raised by a progress callback when a cancellation was requested; the job ends as cancelled."""


class JobFailed(Exception):
    """The job cannot finish; ``reason`` is meant for the person who submitted it."""

    def __init__(self, reason: str):
        self.reason = reason if len(reason) <= MAX_REASON else reason[:MAX_REASON - 3] + "..."
        super().__init__(self.reason)


def service_params(settings: Settings, info: PipelineInfo, params: dict[str, Any] | None) -> dict[str, Any]:
    """The job's parameters plus the service's choices: learned methods run on ONNX Runtime (unless the job
    asks for ``engine``) with the operator's provider preference (``RECON_PROVIDERS``) when one is set."""
    merged = dict(params or {})
    if info.learned:
        merged.setdefault("engine", SERVICE_ENGINE)
        providers = settings.provider_list()
        if providers:
            merged["providers"] = providers
    return merged


def raw_input(info: PipelineInfo, job: JobRecord) -> InputRecord:
    """The one raw-data file of the job (by its recorded kind); other inputs only carry study context."""
    raw = [i for i in job.inputs if i.kind in info.input_kinds]
    wanted = " or ".join(info.input_kinds)
    if not raw:
        found = ", ".join(sorted({i.kind for i in job.inputs})) or "no files"
        raise JobFailed(f"pipeline {info.name!r} needs one raw-data file ({wanted}); the job has {found}")
    if len(raw) > 1:
        names = ", ".join(repr(i.filename) for i in raw)
        raise JobFailed(f"pipeline {info.name!r} takes exactly one raw-data file ({wanted}); the job has "
                        f"{len(raw)}: {names}")
    return raw[0]


def input_path(data_dir: Path, record: InputRecord) -> Path:
    """Absolute path of a stored input; refuses a recorded path that leads outside the data directory."""
    root = Path(data_dir).resolve()
    path = (root / record.path).resolve()
    if not path.is_relative_to(root) or path == root:
        raise JobFailed(f"input {record.filename!r}: its stored path is outside the data directory; resubmit the job")
    return path


class _Scrubber:
    """Replaces server paths and client file names in texts that go to clients or logs."""

    def __init__(self, data_dir: Path, record: InputRecord | None = None, path: Path | None = None):
        self.pairs: list[tuple[str, str]] = []
        if path is not None and record is not None:
            self.pairs.append((str(path), record.filename))
        if record is not None:
            self.pairs.append((record.path, record.filename))
        for root in {str(Path(data_dir).resolve()), str(data_dir)}:
            self.pairs.append((root, "<data dir>"))

    def for_client(self, text: str) -> str:
        for old, new in self.pairs:
            text = text.replace(old, new)
        return text

    def for_log(self, text: str, record: InputRecord | None) -> str:
        text = self.for_client(text)
        if record is not None and record.filename:
            text = text.replace(record.filename, "<input>")
        return text


def _jsonable(value: Any) -> Any:
    """JSON-safe copy (tuples to lists, unknown objects to strings, non-finite floats to None)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return clean(json.loads(json.dumps(value, default=str, allow_nan=True)))


def _reconstruction_progress(progress: ProgressFn, unit: str) -> Callable[[int, int], None]:

    def report(done: int, total: int) -> None:
        fraction = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
        text = f"reconstructing {unit} {done}/{total}" if total > 1 else "reconstructing"
        progress(LOAD_END + (RECON_END - LOAD_END) * fraction, text)

    return report


def _engine_provider(volume_attrs: dict[str, Any], params: dict[str, Any]) -> str:
    return str(volume_attrs.get("engine") or f"torch-{params.get('device', 'cpu')}")


def _study(job: JobRecord, acq: Any) -> StudyInfo:
    """The job's study (from its DICOM parts and the request), filling gaps from an ISMRMRD header."""
    study = study_info(job.study)
    header_xml = getattr(acq, "header_xml", None)
    if header_xml:
        header = StudyInfo.from_ismrmrd_header(header_xml).to_mapping()
        given = {k: v for k, v in study.to_mapping().items() if v is not None}
        study = StudyInfo(**{**header, **given})
    if not study.study_instance_uid:  # a new study: it happened now
        now = datetime.now(UTC)
        study = dataclasses.replace(study, study_date=study.study_date or now.strftime("%Y%m%d"),
                                    study_time=study.study_time or now.strftime("%H%M%S"))
    return study.with_uid()


def _dicom_provenance(provenance: dict[str, Any]) -> Provenance:
    return Provenance(method=provenance["method"], pipeline=provenance["pipeline"],
                      model_id=provenance["model_id"], weights_sha256=provenance["weights_sha256"],
                      engine_provider=provenance["engine_provider"],
                      parameters=_effective_parameters(provenance))


def _effective_parameters(provenance: dict[str, Any]) -> dict[str, Any]:
    """The parameters as run: those given, with the weights the method chose from the data filled in."""
    chosen = {k: v for k, v in (provenance.get("chosen_parameters") or {}).items() if k.startswith("lam")}
    merged = {**(provenance["parameters"] or {}), **chosen}
    return {k: v for k, v in merged.items() if v is not None}


def report_in_dicom(description: str, report: dict[str, Any] | None) -> tuple[str, dict[str, str] | None]:
    """The series description and DICOM attributes that carry a learned image's consistency report: its summary
    in ImageComments, and for an out-of-distribution image the flag at the head of both."""
    if report is None:
        return description, None
    summary = consistency_summary(report)
    flag = flag_text(report)
    if flag is None:
        return description, {"ImageComments": summary[:DICOM_LT]}
    return f"{FLAG_NOTE} {description}", {"ImageComments": f"{flag}. {summary}"[:DICOM_LT]}


def run_job(settings: Settings, job: JobRecord, progress: ProgressFn, review_panes: bool = True) -> dict[str, Any]:
    """Reconstruct ``job`` and write its results under ``settings.data_dir``; returns the job's result:
    ``{"files": {format: path relative to DATA_DIR}, "provenance": {...}, "metrics": {...} | None}``. A learned
    method's results include the review tool's comparison images unless ``review_panes`` is false (batch runs).

    Raises :class:`JobFailed` with a reason for the submitter, or :class:`JobCancelled` from ``progress``.
    """
    from pipelines.io.detect import load_acquisition
    from pipelines.pipeline import modality_of, reconstruct

    data_dir = settings.data_dir
    started = time.perf_counter()
    try:
        info = get_pipeline(job.pipeline)
    except KeyError:
        raise JobFailed(f"unknown pipeline {job.pipeline!r}") from None
    record = raw_input(info, job)
    path = input_path(data_dir, record)
    scrub = _Scrubber(data_dir, record, path)
    stage = "loading the input"
    try:
        progress(0.0, "loading input")
        try:
            acq = load_acquisition(path)
        except ValueError as err:  # InputError included
            problem = err.problem if isinstance(err, InputError) else str(err)
            raise JobFailed(f"input {record.filename!r}: {scrub.for_client(problem)}") from err
        modality = modality_of(acq)
        if modality != info.modality:
            raise JobFailed(f"input {record.filename!r}: holds {modality.upper()} data, pipeline {info.name!r} "
                            f"reconstructs {info.modality.upper()}")
        stage = "reconstructing"
        progress(LOAD_END, "reconstructing")
        params = service_params(settings, info, job.params)
        try:
            report = _reconstruction_progress(progress, info.method.progress_unit)
            recon = reconstruct(acq, info.method.name, params, report)
        except InputError as err:
            raise JobFailed(f"input {record.filename!r}: {scrub.for_client(err.problem)}") from err
        except ValueError as err:  # bad parameters, a model that does not fit, ...
            raise JobFailed(f"pipeline {info.name!r}: {scrub.for_client(str(err))}") from err
        panes = None
        if info.learned and review_panes:  # what the reviewer compares it with (pipelines.comparison)
            from pipelines.comparison import comparison_panes

            stage = "computing the comparison images"
            progress(RECON_END, "computing the comparison images")
            panes = comparison_panes(acq)
        stage = "writing results"
        progress(RECON_END, "writing results")
        attrs = recon.volume.attrs
        provenance = {
            "pipeline": info.name, "method": info.method.name, "modality": info.modality,
            "model_id": attrs.get("model_id"), "weights_sha256": attrs.get("weights_sha256"),
            "engine_provider": _engine_provider(attrs, params), "parameters": attrs.get("params", params),
            "chosen_parameters": attrs.get("chosen"), "reconstruction_seconds": attrs.get("seconds"),
            "slices": int(recon.volume.data.shape[0]),
        }
        if attrs.get("consistency_report") is not None:
            provenance["consistency_report"] = attrs["consistency_report"]
        metrics = None if recon.metrics is None else {k: float(v) for k, v in recon.metrics.items()}
        dicom = DicomSeries(info.modality, _study(job, acq), _dicom_provenance(provenance),
                            *report_in_dicom(f"{info.name} reconstruction", attrs.get("consistency_report")))
        files = write_results(data_dir, job.id, recon.volume, metrics,
                              {"job_id": job.id, "pipeline": info.name, "method": info.method.name}, dicom, panes)
        provenance["seconds"] = time.perf_counter() - started
        return _jsonable({"files": files, "provenance": provenance, "metrics": metrics})
    except (JobCancelled, JobFailed):
        raise
    except Exception as err:
        text = "".join(traceback.TracebackException.from_exception(err).format())
        LOG.error("job %s: unexpected error while %s:\n%s", job.id, stage, scrub.for_log(text, record))
        raise JobFailed(f"internal error while {stage} ({type(err).__name__}); the service log has the details "
                        f"for job {job.id}") from err
