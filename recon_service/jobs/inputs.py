"""Content checks of a submission's files before a job is accepted.

Each file is classified by its content, never by its name: HDF5 raw data by its layout (the same detection
``pipelines.io.detect`` uses to pick a reader), DICOM by the ``DICM`` preamble. A pipeline then needs exactly
one raw file of one of its input kinds, and that file must open with its reader; DICOM files only add the
patient and study the results belong to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from pipelines.data import InputError
from pipelines.io.detect import DICOM, detect_layout, format_label, load_acquisition
from pipelines.io.dicom_study import DICOM_KEYWORDS, FIELD_OF_KEYWORD, StudyInfo, is_valid_uid, read_study_keywords
from recon_service.jobs.catalog import PipelineInfo
from recon_service.jobs.store import NewInput
from recon_service.storage import StoredFile

# patient and study attributes a DICOM file may contribute to the job's ``study``
# the study of a job is kept with DICOM keywords as keys (PatientName, StudyInstanceUID, ...)
STUDY_KEYWORDS = tuple(DICOM_KEYWORDS.values())
_IDENTITY = ("StudyInstanceUID", "PatientID")


class RejectedInput(ValueError):
    """A submission the service will not accept; the message names the file part and the problem.

    ``unsupported`` marks files of a type the service does not read at all (HTTP 415 rather than 422)."""

    def __init__(self, message: str, unsupported: bool = False):
        self.unsupported = unsupported
        super().__init__(message)


@dataclass
class CheckedSubmission:
    inputs: list[NewInput]
    study: dict[str, Any] = field(default_factory=dict)
    raw_kind: str = ""


def detect_kind(path: str | Path) -> str:
    """``fastmri``, ``ismrmrd``, ``sinogram`` or ``dicom`` from the file's content.

    Raises InputError for an HDF5 file of no known layout, and :class:`RejectedInput` (unsupported) for a file
    that is neither HDF5 nor DICOM."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(132)
    if len(head) == 132 and head[128:132] == b"DICM":
        return DICOM
    if h5py.is_hdf5(path):
        return detect_layout(path)[0]
    raise RejectedInput("neither an HDF5 raw-data file nor a DICOM file (no HDF5 signature, no 'DICM' preamble)",
                        unsupported=True)


def check_raw(path: str | Path, kind: str) -> None:
    """Open a raw file with its reader (only the first slice of MRI data) so broken files fail now, with the
    reader's message, instead of later in a worker."""
    opts = {"slices": [0]} if kind in ("fastmri", "ismrmrd") else {}
    try:
        load_acquisition(path, **opts)
    except InputError:
        raise
    except Exception as err:  # h5py/numpy errors on malformed content
        raise InputError(str(path), f"could not be read as {format_label(kind)} ({type(err).__name__}: {err})") \
            from err


def study_info(study: dict[str, Any]) -> StudyInfo:
    """A job's study (DICOM keywords as keys) as a checked :class:`StudyInfo`; ValueError naming the field."""
    unknown = sorted(set(study) - set(FIELD_OF_KEYWORD))
    if unknown:
        raise ValueError(f"unknown study field(s) {', '.join(map(repr, unknown))}; known: {', '.join(STUDY_KEYWORDS)}")
    try:
        return StudyInfo.from_mapping({FIELD_OF_KEYWORD[k]: v for k, v in study.items()})
    except ValueError as err:  # name the field the way the client sent it
        message = str(err)
        for name, keyword in DICOM_KEYWORDS.items():
            message = message.replace(f"{name}:", f"{keyword}:")
        raise ValueError(message) from None


def check_study(study: dict[str, Any]) -> None:
    """A study given by the client: a flat object of DICOM keywords to strings, each a valid DICOM value."""
    for key, value in study.items():
        if not isinstance(value, str) and value is not None:
            raise RejectedInput(f"study field {key!r} must be a string or null, not {type(value).__name__}")
    uid = study.get("StudyInstanceUID")
    if uid is not None and not is_valid_uid(uid):
        raise RejectedInput("study field 'StudyInstanceUID' is not a DICOM UID (digits and dots, at most 64 "
                            "characters, no leading zeros)")
    try:
        study_info(study)
    except ValueError as err:
        raise RejectedInput(f"study: {err}") from err


def _label(stored: StoredFile) -> str:
    return f"file part {stored.position + 1} ({stored.name!r})"


def _merge_dicom(studies: list[tuple[StoredFile, dict[str, str]]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    first: dict[str, StoredFile] = {}
    for stored, study in studies:
        for key in _IDENTITY:
            if key in study and key in merged and study[key] != merged[key]:
                raise RejectedInput(f"{_label(stored)}: its {key} differs from that of {_label(first[key])}; "
                                    "the DICOM files of one submission must belong to one patient and study")
            first.setdefault(key, stored)
        for key, value in study.items():
            merged.setdefault(key, value)
    return merged


def check_submission(pipeline: PipelineInfo, files: list[StoredFile],
                     study: dict[str, Any] | None = None) -> CheckedSubmission:
    """Classify and check the stored files of a submission for ``pipeline``.

    Returns the job inputs and the study (DICOM attributes, overridden by the client's ``study``).
    Raises :class:`RejectedInput` naming the file part and the problem."""
    if study:
        check_study(study)
    if not files:
        raise RejectedInput("no file parts: send the raw data as a multipart 'file' part")
    raw: list[tuple[StoredFile, str]] = []
    wrong: list[tuple[StoredFile, str]] = []
    dicom: list[tuple[StoredFile, dict[str, str]]] = []
    inputs: list[NewInput] = []
    for stored in files:
        try:
            kind = detect_kind(stored.path)
            if kind == DICOM:
                dicom.append((stored, read_study_keywords(stored.path)))
            elif kind in pipeline.input_kinds:
                raw.append((stored, kind))
            else:
                wrong.append((stored, kind))
        except InputError as err:
            raise RejectedInput(f"{_label(stored)}: {err.problem}") from err
        except RejectedInput as err:
            raise RejectedInput(f"{_label(stored)}: {err}", err.unsupported) from err
        inputs.append(NewInput(stored.name, stored.relpath, stored.size, stored.sha256, kind))
    wanted = " or ".join(format_label(k) for k in pipeline.input_kinds)
    if wrong:
        stored, kind = wrong[0]
        raise RejectedInput(f"{_label(stored)} is {format_label(kind)}, but pipeline {pipeline.name!r} "
                            f"({pipeline.modality.upper()}) takes {wanted}")
    if not raw:
        raise RejectedInput(f"no raw-data file: pipeline {pipeline.name!r} needs one {wanted} file "
                            "(DICOM files only supply the patient and study)")
    if len(raw) > 1:
        parts = ", ".join(_label(s) for s, _ in raw)
        raise RejectedInput(f"{len(raw)} raw-data files ({parts}): a job reconstructs exactly one; "
                            "submit one job per file")
    stored, kind = raw[0]
    try:
        check_raw(stored.path, kind)
    except InputError as err:
        raise RejectedInput(f"{_label(stored)}: {err.problem}") from err
    merged: dict[str, Any] = dict(_merge_dicom(dicom))
    merged.update(study or {})
    try:
        study_info(merged)
    except ValueError as err:
        raise RejectedInput(f"study of the DICOM parts: {err}") from err
    return CheckedSubmission(inputs, merged, kind)
