"""Opening HDF5 files with errors that name the file and the problem."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pipelines.data import InputError

SliceSelection = slice | list[int] | int | None


def open_hdf5(path: str | Path) -> h5py.File:
    """Open an HDF5 file read-only; missing, unreadable or non-HDF5 files raise InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a directory, expected an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file ({err})") from err


def slice_indices(slices: SliceSelection, count: int, source: str) -> list[int]:
    """Indices (in the order asked, negatives wrapped) that ``slices`` selects out of ``count``."""
    if slices is None:
        return list(range(count))
    if isinstance(slices, slice):
        indices = list(range(count)[slices])
    elif isinstance(slices, int | np.integer):
        indices = [int(slices)]
    else:
        indices = [int(i) for i in slices]
    bad = [i for i in indices if not -count <= i < count]
    if bad:
        raise InputError(source, f"slice indices {bad} out of range for {count} slices")
    indices = [i % count for i in indices]
    if not indices:
        raise InputError(source, f"slice selection {slices!r} selects no slices of {count}")
    return indices


def read_slices(ds: h5py.Dataset, indices: list[int], source: str) -> np.ndarray:
    """Read ``ds[indices]`` touching only those slices on disk."""
    try:
        steps = np.diff(indices)
        if len(indices) == 1:
            return ds[indices[0]:indices[0] + 1]
        if np.all(steps == steps[0]) and steps[0] > 0:
            return ds[indices[0]:indices[-1] + 1:int(steps[0])]
        unique = sorted(set(indices))       # h5py wants increasing, unique indices
        block = ds[unique]
        return block[[unique.index(i) for i in indices]]
    except (OSError, ValueError, TypeError) as err:
        raise InputError(source, f"could not read dataset {ds.name!r} ({err})") from err
