"""BART's file format: a ``.hdr`` text header with the dimensions and a ``.cfl`` file of complex64 values in
column-major order (BART's first dimension fastest). The one reader and writer of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_cfl(base: Path, array: np.ndarray) -> None:
    """Write ``array`` as BART ``base.hdr`` + ``base.cfl`` (complex64, column-major).

    Our arrays are C-ordered with the fastest axis last; BART's first dimension is the fastest, so
    the BART dimensions are our shape reversed (an (C, H, W) array becomes W x H x 1 x C: BART's
    read axis x = our W, y = our H, coils in dimension 3).
    """
    array = np.ascontiguousarray(array, dtype=np.complex64)
    dims = list(array.shape[::-1]) + [1] * (16 - array.ndim)
    base.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    array.tofile(base.with_suffix(".cfl"))


def read_cfl(base: Path) -> np.ndarray:
    """Read a BART ``.hdr``/``.cfl`` pair into a C-ordered array with BART's dimensions reversed."""
    lines = base.with_suffix(".hdr").read_text().splitlines()
    dims = [int(v) for v in lines[lines.index("# Dimensions") + 1].split()]
    data = np.fromfile(base.with_suffix(".cfl"), dtype=np.complex64)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{base}.cfl holds {data.size} values, its header says {dims}")
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return data.reshape(dims[::-1])
