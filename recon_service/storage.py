"""Local storage under DATA_DIR: uploads written durably before a job is acknowledged, results read back.

Layout (the contract every part of the service relies on):

* ``DATA_DIR/uploads/<job_id>/<position>-<safe_name>``: each upload is streamed to a hidden temporary name,
  fsynced, renamed and its directory fsynced, so after a crash a file either exists complete or not at all.
* ``DATA_DIR/results/<job_id>/``: what the workers write; the job's ``result`` maps format -> relative path.

No path is built from a client's name without :func:`safe_name`, and every path is checked to lie inside
DATA_DIR (:func:`within`), so neither ``../`` nor absolute names nor symlinked job ids can escape it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipelines.io.durable import fsync_path

UPLOADS = "uploads"
RESULTS = "results"
MAX_NAME = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class StorageError(ValueError):
    """A path that would leave the data directory, or a name that cannot be stored."""


class UploadTooLarge(Exception):
    """The files of one submission exceed the configured limit."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        super().__init__(f"the uploaded files exceed the limit of {limit_bytes / 2**20:g} MiB per submission")


def safe_name(name: str | None, max_length: int = MAX_NAME) -> str:
    """A file name safe to join to a directory: the last path component of ``name`` with every character
    outside ``[A-Za-z0-9._-]`` replaced by ``_``, no ``..``, no leading dot, at most ``max_length`` characters
    (the extension kept), and ``upload`` when nothing is left."""
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = _UNSAFE.sub("_", base)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).lstrip(".")
    if len(cleaned) > max_length:
        stem, dot, ext = cleaned.rpartition(".")
        ext = dot + ext if dot and len(ext) <= 16 else ""
        cleaned = (cleaned[:len(cleaned) - len(ext)] if ext else cleaned)[:max_length - len(ext)] + ext
    return cleaned or "upload"


def within(root: Path, path: Path) -> Path:
    """``path`` resolved, after checking that it lies inside ``root`` (symlinks followed)."""
    root_resolved = root.resolve()
    resolved = (root_resolved / path).resolve() if not path.is_absolute() else path.resolve()
    if resolved != root_resolved and not resolved.is_relative_to(root_resolved):
        raise StorageError(f"path {path} is outside the data directory")
    return resolved


def upload_dir(data_dir: Path, job_id: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", job_id):
        raise StorageError(f"invalid job id {job_id!r}")
    return within(data_dir, Path(UPLOADS) / job_id)


def result_file(data_dir: Path, relative: str) -> Path:
    """The absolute path of a result entry (relative to DATA_DIR), refused if it points outside."""
    if not relative or Path(relative).is_absolute():
        raise StorageError(f"result path {relative!r} must be relative to the data directory")
    return within(data_dir, Path(relative))


@dataclass(frozen=True)
class StoredFile:
    """A complete upload on disk; ``relpath`` is relative to DATA_DIR (what the job store keeps)."""

    position: int
    client_name: str
    name: str
    path: Path
    relpath: str
    size: int
    sha256: str


class UploadWriter:
    """One file being streamed into the upload directory; size and SHA-256 are computed on the way."""

    def __init__(self, area: UploadArea, position: int, client_name: str):
        self.area, self.position, self.client_name = area, position, client_name
        self.name = safe_name(client_name)
        self.final = within(area.directory, Path(f"{position}-{self.name}"))
        self.temp = within(area.directory, Path(f".{position}.part"))
        self._file = open(self.temp, "xb")  # noqa: SIM115 - closed in finish()/abort()
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.area.count(len(chunk))
        self._file.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    def finish(self) -> StoredFile:
        """Flush to disk, then give the file its final name (the directory is fsynced by the area)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.temp, self.final)
        relpath = self.final.relative_to(self.area.data_dir).as_posix()
        return StoredFile(self.position, self.client_name, self.name, self.final, relpath, self.size,
                          self._digest.hexdigest())

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.temp.unlink(missing_ok=True)


class UploadArea:
    """The upload directory of one submission, with a limit on the total bytes of its files.

    Created empty; :meth:`discard` removes it with everything in it (a rejected submission leaves nothing)."""

    def __init__(self, data_dir: Path, job_id: str, max_bytes: int):
        self.data_dir = data_dir.resolve()
        self.job_id = job_id
        self.max_bytes = max_bytes
        self.directory = upload_dir(self.data_dir, job_id)
        self.total = 0
        self.files: list[StoredFile] = []
        self._created = False

    def open(self, client_name: str) -> UploadWriter:
        if not self._created:
            parent = self.directory.parent
            parent.mkdir(parents=True, exist_ok=True)
            self.directory.mkdir()  # a fresh id: an existing directory is an error
            self._created = True
            fsync_path(parent)
        return UploadWriter(self, len(self.files), client_name)

    def count(self, n: int) -> None:
        self.total += n
        if self.total > self.max_bytes:
            raise UploadTooLarge(self.max_bytes)

    def add(self, stored: StoredFile) -> None:
        self.files.append(stored)

    def sync(self) -> None:
        """Make every rename in the directory durable (call before the job row is committed)."""
        if self._created:
            fsync_path(self.directory)

    def discard(self) -> None:
        if self._created:
            shutil.rmtree(self.directory, ignore_errors=True)
            self._created = False
        self.files.clear()
