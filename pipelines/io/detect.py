"""The input formats the project reads, and opening an HDF5 raw-data file with the reader its layout calls for.

:data:`FORMATS` is the one list of input formats (kind, modality, label); :func:`formats_for` and
:func:`format_label` read it. HDF5 layouts:

* ``kspace`` dataset                          -> fastMRI (``read_fastmri``)
* a group with ``data`` or ``xml`` (``/dataset`` first) -> ISMRMRD/MRD (``read_ismrmrd``)
* ``sinogram`` dataset                        -> CT sinogram (``pipelines.io.sinogram.read_sinogram``)

DICOM files carry no raw data here; they supply the patient and study (``pipelines.io.dicom_study``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from pipelines.data import CTAcquisition, InputError, MRIAcquisition
from pipelines.io.fastmri import read_fastmri
from pipelines.io.hdf5 import open_hdf5
from pipelines.io.ismrmrd_mrd import read_ismrmrd


@dataclass(frozen=True)
class Format:
    """An input format: its kind name, the modality of its raw data (None: DICOM, identity only), a label."""

    kind: str
    modality: str | None
    label: str


DICOM = "dicom"
FORMATS = (
    Format("fastmri", "mri", "fastMRI k-space (HDF5)"),
    Format("ismrmrd", "mri", "ISMRMRD raw data (HDF5)"),
    Format("sinogram", "ct", "CT sinogram (HDF5)"),
    Format(DICOM, None, "DICOM"),
)
_BY_KIND = {f.kind: f for f in FORMATS}
MODALITIES = tuple(dict.fromkeys(f.modality for f in FORMATS if f.modality is not None))
# the raw-data (HDF5) kinds, in the order :func:`detect_layout` tries them
RAW_LAYOUTS = tuple(f.kind for f in FORMATS if f.modality is not None)


def formats_for(modality: str | None) -> tuple[str, ...]:
    """The kinds of the raw-data formats of ``modality`` ("mri", "ct"); ``None`` gives ``("dicom",)``.
    ``ValueError`` for an unknown modality."""
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    return tuple(f.kind for f in FORMATS if f.modality == modality)


def format_label(kind: str) -> str:
    """A format's human label, e.g. ``"fastMRI k-space (HDF5)"``; ``ValueError`` for an unknown kind."""
    try:
        return _BY_KIND[kind].label
    except KeyError:
        raise ValueError(f"unknown input format {kind!r}; known: {', '.join(_BY_KIND)}") from None


def _ismrmrd_group(f: h5py.File) -> str | None:
    names = ["dataset"] + sorted(k for k in f.keys() if k != "dataset")
    for name in names:
        group = f.get(name)
        if isinstance(group, h5py.Group) and ("data" in group or "xml" in group):
            return name
    return None


def _describe(f: h5py.File, limit: int = 20) -> str:
    items: list[str] = []

    def visit(name: str, obj) -> None:
        items.append(f"{name} {obj.shape}" if isinstance(obj, h5py.Dataset) else f"{name}/")

    f.visititems(visit)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return (", ".join(items[:limit]) + more) or "nothing"


def detect_layout(path: str | Path) -> tuple[str, str | None]:
    """The raw-data layout of an HDF5 file: ``(kind, ismrmrd_group)`` with kind one of :data:`RAW_LAYOUTS`
    (the group is None except for ISMRMRD). Only the file's structure is read, not its data."""
    with open_hdf5(path) as f:
        if "kspace" in f:
            return "fastmri", None
        if (group := _ismrmrd_group(f)) is not None:
            return "ismrmrd", group
        if "sinogram" in f:
            return "sinogram", None
        raise InputError(str(path), "not a known raw-data layout: expected a 'kspace' dataset (fastMRI), "
                                    "an ISMRMRD group with 'data'/'xml', or a 'sinogram' dataset; found: "
                                    + _describe(f))


def load_acquisition(path: str | Path, **opts: Any) -> MRIAcquisition | CTAcquisition:
    """Read ``path`` with the reader its layout calls for; ``opts`` go to that reader."""
    source = str(path)
    kind, group = detect_layout(path)
    if kind == "fastmri":
        return read_fastmri(path, **opts)
    if kind == "ismrmrd":
        return read_ismrmrd(path, **{"dataset": group, **opts})
    try:
        from pipelines.io.sinogram import read_sinogram
    except ImportError as err:
        raise InputError(source, f"holds a 'sinogram' dataset, but the sinogram reader is not available ({err})") \
            from err
    return read_sinogram(path, **opts)
