"""Progress bars on stderr for the command line and the demo: tqdm driven by ``progress(done, total)``."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm


class ProgressBar:
    """A tqdm bar driven by ``progress(done, total)`` callbacks, shown from the first one on (so a command
    refused before any work prints only its error)."""

    def __init__(self, desc: str):
        self.desc = desc
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(desc=self.desc, unit="step", file=sys.stderr, leave=False)
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def write_mri_set(out: Path, specs, cfg) -> list[Path]:  # noqa: ANN001 - pipelines.simulate.mri types
    """``pipelines.simulate.mri.write_set`` with a progress bar on stderr."""
    from pipelines.simulate.mri import write_set

    with tqdm(total=len(specs), desc=f"simulating {out.name}", unit="file", file=sys.stderr) as bar:
        return write_set(out, specs, cfg, progress=lambda done, total: bar.update(done - bar.n))
