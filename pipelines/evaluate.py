"""Evaluate reconstruction methods on a directory of acquisitions with references.

The summary has the shape::

    {"dataset": DIR, "volumes": N,
     "methods": {name: {"psnr": {"mean", "std"}, "ssim": {...}, "nmse": {...}, "seconds_per_slice": s}}}

Means and standard deviations are over volumes (files), as fastMRI reports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data import InputError
from pipelines.pipeline import Acquisition, load, reconstruct

HDF5_SUFFIXES = (".h5", ".hdf5")


def dataset_files(directory: str | Path, pattern: str = "*") -> list[Path]:
    """The HDF5 files in ``directory`` whose names match the glob ``pattern``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(directory, "not a directory")
    files = sorted(p for p in directory.glob(pattern) if p.suffix in HDF5_SUFFIXES)
    if not files:
        raise InputError(directory, f"no .h5 files matching {pattern!r} to evaluate")
    return files


METRICS = ("psnr", "ssim", "nmse")


def summarize(rows: dict[str, list[float]]) -> dict[str, Any]:
    """One method's summary from per-volume lists ``psnr``, ``ssim``, ``nmse``, ``seconds`` and ``slices``:
    mean and std of each metric over volumes, and seconds per slice over all of them."""
    summary: dict[str, Any] = {key: {"mean": float(np.mean(rows[key])), "std": float(np.std(rows[key]))}
                               for key in METRICS}
    summary["seconds_per_slice"] = float(np.sum(rows["seconds"]) / max(np.sum(rows["slices"]), 1))
    return summary


def evaluate_acquisitions(acquisitions: Iterable[tuple[str, Acquisition]], methods: Sequence[str],
                          params: dict[str, dict[str, Any]] | None = None,
                          progress: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Run every method on every acquisition and summarise PSNR/SSIM/NMSE and time per slice."""
    params = params or {}
    per_method: dict[str, dict[str, list[float]]] = {
        m: {"psnr": [], "ssim": [], "nmse": [], "seconds": [], "slices": []} for m in methods}
    volumes = 0
    for name, acq in acquisitions:
        volumes += 1
        if acq.reference is None:
            raise InputError(name, "has no reference image to evaluate against")
        for method in methods:
            result = reconstruct(acq, method, params.get(method))
            rows = per_method[method]
            for key in METRICS:
                rows[key].append(result.metrics[key])
            rows["seconds"].append(result.volume.attrs["seconds"])
            rows["slices"].append(result.volume.data.shape[0])
            if progress:
                progress(name, method)
    return {"volumes": volumes, "methods": {method: summarize(rows) for method, rows in per_method.items()}}


def evaluate_directory(directory: str | Path, methods: Sequence[str],
                       params: dict[str, dict[str, Any]] | None = None, max_files: int | None = None,
                       progress: Callable[[str, str], None] | None = None, pattern: str = "*") -> dict[str, Any]:
    """Evaluate ``methods`` on the HDF5 acquisitions in ``directory`` matching ``pattern`` (one file in
    memory at a time)."""
    files = dataset_files(directory, pattern)[:max_files]
    # a generator: one file in memory at a time
    summary = evaluate_acquisitions(((f.name, load(f)) for f in files), methods, params, progress)
    return {"dataset": str(directory), **summary}


def format_summary(summary: dict[str, Any]) -> str:
    """The methods of a summary (:func:`evaluate_directory`) as a text table: PSNR, SSIM, NMSE (mean ± std over
    volumes) and seconds per slice."""
    lines = [f"{'method':<18} {'PSNR (dB)':>16} {'SSIM':>16} {'NMSE':>18} {'s/slice':>9}"]
    for name, m in summary["methods"].items():
        lines.append(f"{name:<18} {m['psnr']['mean']:>8.2f} ± {m['psnr']['std']:<5.2f} "
                     f"{m['ssim']['mean']:>8.4f} ± {m['ssim']['std']:<5.3f} "
                     f"{m['nmse']['mean']:>9.5f} ± {m['nmse']['std']:<6.4f} {m['seconds_per_slice']:>9.3f}")
    return "\n".join(lines)


HELD_OUT_SETS = ("test", "test-orientation", "test-contrast")
ACCELERATIONS = ("4x", "8x")


def evaluate_held_out(root: str | Path, methods: Sequence[str], params: dict[str, dict[str, Any]] | None = None,
                      progress: Callable[[str, str, dict[str, Any]], None] | None = None
                      ) -> dict[str, dict[str, dict[str, Any]]]:
    """``{set: {acceleration: summary}}`` over the simulated brain benchmark's held-out sets under ``root``
    (files named ``*_4x*`` / ``*_8x*``); ``progress(set, acceleration, summary)`` after each."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name in HELD_OUT_SETS:
        for acc in ACCELERATIONS:
            summary = evaluate_directory(Path(root) / name, methods, params, pattern=f"*_{acc}*")
            results.setdefault(name, {})[acc] = summary
            if progress:
                progress(name, acc, summary)
    return results
