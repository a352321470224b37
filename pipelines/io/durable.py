"""Durable writes: fsync of a written file, or of a directory after a rename or a new entry in it."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | Path) -> None:
    """Flush ``path`` (a file, or a directory so that renames and new entries in it survive a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_dir(staging: str | Path, final: str | Path) -> Path:
    """Move a fully written folder ``staging`` into place as ``final``: every file and folder in it is fsynced
    first, an older ``final`` (left by an interrupted or earlier run) is replaced, and the rename is made durable,
    so a reader sees the whole folder or none of it."""
    import shutil

    staging, final = Path(staging), Path(final)
    for path in sorted(staging.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        fsync_path(path)
    fsync_path(staging)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    fsync_path(final.parent)
    return final
