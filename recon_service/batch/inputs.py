"""What a batch reconstructs: the raw-data files under a directory, or those a manifest lists.

A directory gives every ``.h5`` / ``.hdf5`` / ``.mrd`` file under it (recursively, in sorted order). A manifest is
a text file with one input per line, relative to the manifest's folder or absolute; blank lines and ``#`` comments
are skipped. A line may also be a JSON object ``{"path": ..., "params": {...}}`` whose ``params`` override the
batch's own for that file.

Each input gets a *key*: its path relative to the directory (or to the manifest's folder; a file elsewhere: its
name) with every character outside
``[A-Za-z0-9_-]`` made ``_``, shortened with a hash when long. The key names its output folder and its lines in
the status file, and is the same on every run over the same inputs, which is what resuming rests on.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAW_SUFFIXES = (".h5", ".hdf5", ".mrd")
MAX_KEY = 64


class BatchInputError(ValueError):
    """The batch's input cannot be listed (no such directory, an unreadable manifest, a missing listed file)."""


@dataclass(frozen=True)
class BatchItem:
    key: str
    path: Path
    params: dict[str, Any] = field(default_factory=dict)


def item_key(relative: str) -> str:
    """``"sub/brain 01.h5"`` -> ``"sub_brain_01"``: a folder name and job id ([A-Za-z0-9_-], at most 64)."""
    stem = relative
    for suffix in RAW_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    key = re.sub(r"[^A-Za-z0-9_-]", "_", stem).strip("_") or "input"
    if len(key) > MAX_KEY:
        digest = hashlib.sha1(relative.encode()).hexdigest()[:10]
        key = f"{key[: MAX_KEY - 11]}-{digest}"
    return key


def _unique(items: list[tuple[str, Path, dict[str, Any]]]) -> list[BatchItem]:
    keys = [item_key(rel) for rel, _, _ in items]
    seen: dict[str, int] = {}
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
    out = []
    for (rel, path, params), key in zip(items, keys, strict=True):
        if seen[key] > 1:  # "a b.h5" and "a_b.h5": told apart by a hash of the relative path
            key = f"{key[: MAX_KEY - 11]}-{hashlib.sha1(rel.encode()).hexdigest()[:10]}"
        out.append(BatchItem(key, path, params))
    return out


def list_directory(directory: Path) -> list[BatchItem]:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in RAW_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(directory).parts))
    if not files:
        raise BatchInputError(f"{directory}: no raw-data files ({', '.join(RAW_SUFFIXES)}) in this directory")
    return _unique([(p.relative_to(directory).as_posix(), p, {}) for p in files])


def _manifest_line(manifest: Path, number: int, line: str) -> tuple[str, Path, dict[str, Any]]:
    where = f"{manifest}, line {number}"
    params: dict[str, Any] = {}
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise BatchInputError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise BatchInputError(f"{where}: a JSON line needs a \"path\" string")
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise BatchInputError(f"{where}: \"params\" must be an object")
        line = entry["path"]
    path = Path(line).expanduser()
    if not path.is_absolute():
        path = manifest.parent / path
    if not path.is_file():
        raise BatchInputError(f"{where}: no such file {line!r}")
    base = manifest.parent.resolve()
    relative = path.resolve().relative_to(base).as_posix() if path.resolve().is_relative_to(base) else path.name
    return relative, path, params


def list_manifest(manifest: Path) -> list[BatchItem]:
    try:
        text = manifest.read_text()
    except UnicodeDecodeError:
        raise BatchInputError(f"{manifest}: not a text manifest (pass a directory of raw-data files, or a text file "
                              "listing them one per line)") from None
    items = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            items.append(_manifest_line(manifest, number, line))
    if not items:
        raise BatchInputError(f"{manifest}: the manifest lists no files")
    return _unique(items)


def list_inputs(source: str | Path) -> list[BatchItem]:
    """The batch's items from a directory or a manifest (see the module text); ``BatchInputError`` says why not."""
    source = Path(source)
    if source.is_dir():
        return list_directory(source)
    if source.is_file():
        return list_manifest(source)
    raise BatchInputError(f"{source}: no such directory or manifest file")
