"""The sinogram HDF5 format (docs/sinogram-format.md): reader and writer for ``CTAcquisition``.

Datasets: ``sinogram`` (slices, views, detectors) float32, ``angles`` (views,) radians, optional ``reference``
(slices, ny, nx) float32. Root attributes: ``format``, ``format_version``, the geometry (``geometry``,
``detector_type``, ``num_detectors``, ``detector_spacing``, ``source_to_isocenter``, ``source_to_detector``,
``pixel_size``, ``image_shape``), ``units``, ``attenuation_units``, ``affine`` and ``metadata`` (JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from models.physics.ct.geometry import geometry_from_dict
from pipelines.data import CTAcquisition, InputError

FORMAT_NAME = "recon-service-sinogram"
FORMAT_VERSION = 1
_FAN_KEYS = ("detector_type", "source_to_isocenter", "source_to_detector")


def default_affine(image_shape: tuple[int, int], num_slices: int, pixel_size: float,
                   slice_thickness: float | None = None) -> np.ndarray:
    """RAS affine of a ``(z, y, x)`` volume centred on the isocentre: voxel (i=x, j=y, k=z) -> mm."""
    ny, nx = image_shape
    dz = pixel_size if slice_thickness is None else slice_thickness
    affine = np.diag([pixel_size, pixel_size, dz, 1.0])
    affine[:3, 3] = -0.5 * np.array([(nx - 1) * pixel_size, (ny - 1) * pixel_size, (num_slices - 1) * dz])
    return affine


def validate_acquisition(acq: CTAcquisition, source: str | Path) -> dict[str, Any]:
    """Check shapes, finiteness and geometry of ``acq``; returns the normalised geometry dict.
    Raises ``InputError(source, problem)``."""
    sino = np.asarray(acq.sinogram)
    if sino.ndim != 3:
        raise InputError(source, f"sinogram must be (slices, views, detectors), got shape {sino.shape}")
    if min(sino.shape) < 1:
        raise InputError(source, f"sinogram has an empty axis: shape {sino.shape}")
    if not np.issubdtype(sino.dtype, np.floating) and not np.issubdtype(sino.dtype, np.integer):
        raise InputError(source, f"sinogram must be real numbers, got dtype {sino.dtype}")
    if not np.all(np.isfinite(sino)):
        raise InputError(source, f"sinogram contains {int(np.sum(~np.isfinite(sino)))} non-finite values")
    angles = np.asarray(acq.angles)
    if angles.ndim != 1:
        raise InputError(source, f"angles must be one-dimensional, got shape {angles.shape}")
    if angles.shape[0] != sino.shape[1]:
        raise InputError(source, f"{angles.shape[0]} angles for {sino.shape[1]} views: they must match")
    if not np.all(np.isfinite(angles)):
        raise InputError(source, "angles contain non-finite values")
    geometry = dict(acq.geometry)
    geometry.setdefault("num_detectors", sino.shape[2])
    if "image_shape" not in geometry:
        raise InputError(source, "geometry has no image_shape")
    try:
        geom = geometry_from_dict(geometry, angles)
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(source, f"invalid geometry ({err})") from err
    if geom.num_detectors != sino.shape[2]:
        raise InputError(source, f"geometry says {geom.num_detectors} detectors, the sinogram has {sino.shape[2]}")
    if acq.reference is not None:
        ref = np.asarray(acq.reference)
        expected = (sino.shape[0], *geom.image_shape)
        if ref.shape != expected:
            raise InputError(source, f"reference shape {ref.shape} does not match (slices, ny, nx) = {expected}")
        if not np.all(np.isfinite(ref)):
            raise InputError(source, "reference contains non-finite values")
    affine = np.asarray(acq.affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(source, f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
    return geom.to_dict()


def write_sinogram(path: str | Path, acq: CTAcquisition) -> Path:
    """Write ``acq`` as sinogram HDF5 (gzip-compressed datasets). Raises ``InputError`` on invalid content."""
    path = Path(path)
    geometry = validate_acquisition(acq, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("sinogram", data=np.asarray(acq.sinogram, dtype=np.float32), compression="gzip",
                         compression_opts=4, chunks=(1, *np.shape(acq.sinogram)[1:]))
        f.create_dataset("angles", data=np.asarray(acq.angles, dtype=np.float64))
        if acq.reference is not None:
            f.create_dataset("reference", data=np.asarray(acq.reference, dtype=np.float32), compression="gzip",
                             compression_opts=4, chunks=(1, *np.shape(acq.reference)[1:]))
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["geometry"] = geometry["type"]
        for key in ("num_detectors", "detector_spacing", "pixel_size", *(_FAN_KEYS if geometry["type"] == "fan"
                                                                          else ())):
            f.attrs[key] = geometry[key]
        f.attrs["image_shape"] = np.asarray(geometry["image_shape"], dtype=np.int64)
        f.attrs["units"] = "mm"
        f.attrs["attenuation_units"] = str(acq.attrs.get("attenuation_units", "1/mm"))
        f.attrs["affine"] = np.asarray(acq.affine, dtype=np.float64)
        f.attrs["metadata"] = json.dumps(acq.attrs, default=str)
    return path


def _attr(f: h5py.File, key: str, path: Path) -> Any:
    if key not in f.attrs:
        raise InputError(path, f"missing attribute {key!r}")
    value = f.attrs[key]
    return value.decode() if isinstance(value, bytes) else value


def read_sinogram(path: str | Path) -> CTAcquisition:
    """Read a sinogram HDF5 file into a ``CTAcquisition`` (geometry dict as ``Geometry.to_dict()``).

    Raises ``InputError`` naming the file for a missing or unreadable file, missing datasets or attributes,
    wrong shapes, angle/view mismatch, non-finite values and a newer format version.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file ({err})") from err
    with f:
        for name in ("sinogram", "angles"):
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise InputError(path, f"missing dataset {name!r} (a sinogram file needs 'sinogram' and 'angles')")
        version = int(f.attrs.get("format_version", FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise InputError(path, f"format_version {version} is newer than this reader ({FORMAT_VERSION})")
        sino = np.asarray(f["sinogram"][()])
        if sino.ndim == 2:  # a single slice stored without its slice axis
            sino = sino[None]
        angles = np.asarray(f["angles"][()], dtype=np.float64)
        reference = np.asarray(f["reference"][()], dtype=np.float32) if "reference" in f else None
        if reference is not None and reference.ndim == 2:
            reference = reference[None]
        kind = str(_attr(f, "geometry", path))
        geometry: dict[str, Any] = {"type": kind}
        geometry["num_detectors"] = int(f.attrs.get("num_detectors", sino.shape[-1]))
        geometry["detector_spacing"] = float(f.attrs.get("detector_spacing", 1.0))
        geometry["pixel_size"] = float(f.attrs.get("pixel_size", 1.0))
        image_shape = f.attrs.get("image_shape")
        if image_shape is None:
            raise InputError(path, "missing attribute 'image_shape'")
        geometry["image_shape"] = [int(n) for n in np.asarray(image_shape).reshape(-1)]
        if kind == "fan":
            for key in _FAN_KEYS:
                value = _attr(f, key, path)
                geometry[key] = str(value) if key == "detector_type" else float(value)
        affine = f.attrs.get("affine")
        metadata = json.loads(str(_attr(f, "metadata", path))) if "metadata" in f.attrs else {}
        attenuation_units = f.attrs.get("attenuation_units", "1/mm")
    if sino.ndim != 3:
        raise InputError(path, f"sinogram must be (slices, views, detectors), got shape {sino.shape}")
    if len(geometry["image_shape"]) != 2:
        raise InputError(path, f"image_shape must be (ny, nx), got {geometry['image_shape']}")
    if affine is None:
        affine = default_affine(tuple(geometry["image_shape"]), sino.shape[0], geometry["pixel_size"])
    metadata.setdefault("attenuation_units", attenuation_units.decode() if isinstance(attenuation_units, bytes)
                        else str(attenuation_units))
    acq = CTAcquisition(sinogram=sino, angles=angles, geometry=geometry, reference=reference,
                        affine=np.asarray(affine, dtype=np.float64), attrs=metadata, source=str(path))
    acq.geometry = validate_acquisition(acq, path)
    acq.sinogram = np.ascontiguousarray(sino, dtype=np.float32)
    return acq
