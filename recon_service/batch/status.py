"""The batch's status file, ``OUT/status.jsonl``: one JSON line per event of a file, appended and fsynced.

Lines: ``{"time", "key", "input", "status", "attempt", ...}`` with status

* ``started`` (with ``worker``, ``host:pid``),
* ``done`` (with ``seconds``, ``slices``, ``outputs``, ``metrics`` when the input has a reference),
* ``failed`` (with ``reason``),
* ``retry`` (its worker died; with ``reason``).

A file is finished when its last line is ``done`` *and* its output folder is there: outputs are written to a
staging folder and renamed into place before the ``done`` line, so a crash in between leaves a folder without a
line (redone) and never a line without a folder. A partial last line (a crash mid-write) is ignored.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STATUS_FILE = "status.jsonl"


class StatusLog:
    def __init__(self, out: Path):
        self.path = Path(out) / STATUS_FILE

    def records(self) -> list[dict[str, Any]]:
        """Every complete line, oldest first."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the torn last line of an interrupted run
            if isinstance(record, dict) and "key" in record:
                records.append(record)
        return records

    def last_by_key(self) -> dict[str, dict[str, Any]]:
        last: dict[str, dict[str, Any]] = {}
        for record in self.records():
            last[record["key"]] = record
        return last

    def finished(self, out: Path) -> dict[str, dict[str, Any]]:
        """The ``done`` records of files whose output folder exists (what a resumed run skips)."""
        return {key: r for key, r in self.last_by_key().items()
                if r.get("status") == "done" and (Path(out) / key).is_dir()}

    def append(self, key: str, input_path: str, status: str, **fields: Any) -> dict[str, Any]:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "key": key, "input": input_path, "status": status,
                  **fields}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            if f.tell() and not self._ends_with_newline():
                f.write("\n")  # after a torn line, start a fresh one
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return record

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
