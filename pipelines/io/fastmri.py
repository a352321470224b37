"""fastMRI HDF5 files in and out.

Layout (https://github.com/facebookresearch/fastMRI, multi-coil): ``kspace`` (slices, coils, H, W)
complex64 with H the readout (often 2x oversampled, e.g. 640) and W the phase encode; the optional
``mask`` (W,) of challenge test files; ``reconstruction_rss`` (slices, h, w) float32, the RSS image
of fully sampled k-space cropped to the reconSpace matrix; ``ismrmrd_header`` XML; root attributes
(``acquisition``, ``max``, ``norm``, ``patient_id``, ``acceleration``, ``num_low_frequency`` ...).
Single-coil files have ``kspace`` (slices, H, W) and ``reconstruction_esc``.

Reading keeps slices on disk until asked for: only the requested slices are read (h5py slicing).
With ``remove_oversampling`` the readout FOV is cropped to the reconSpace x size in hybrid space
(``mri_geometry.remove_readout_oversampling``); ``recon_shape`` = (recon x, recon y) is the final
image crop, the shape of ``reconstruction_rss``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.fft

from models.physics.mri.masks import count_center_lines, mask_from_kspace
from pipelines.data import InputError, MRIAcquisition
from pipelines.io.hdf5 import SliceSelection, open_hdf5, read_slices, slice_indices
from pipelines.io.mrd_header import EncodingInfo, make_ismrmrd_header, parse_ismrmrd_header
from pipelines.io.mri_geometry import mri_affine, remove_readout_oversampling, select_slices_affine

__all__ = ["make_ismrmrd_header", "read_fastmri", "write_fastmri"]

_REFERENCE_KEYS = ("reconstruction_rss", "reconstruction_esc")
_CONSUMED_ATTRS = ("affine",)


def _attr_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_header(f: h5py.File, source: str) -> tuple[str | None, EncodingInfo | None]:
    if "ismrmrd_header" not in f:
        return None, None
    try:
        raw = f["ismrmrd_header"][()]
    except (OSError, TypeError) as err:
        raise InputError(source, f"could not read dataset 'ismrmrd_header' ({err})") from err
    if isinstance(raw, np.ndarray):
        raw = raw.reshape(-1)[0] if raw.size else b""
    xml = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    return xml, parse_ismrmrd_header(xml, source)


def _read_mask(f: h5py.File, shape_hw: tuple[int, int], source: str) -> np.ndarray | None:
    if "mask" not in f:
        return None
    mask = np.asarray(f["mask"][()])
    if not (np.issubdtype(mask.dtype, np.number) or mask.dtype == bool):
        raise InputError(source, f"dataset 'mask' has non-numeric dtype {mask.dtype}")
    h, w = shape_hw
    if mask.ndim == 1 and mask.shape[0] == w:
        mask = mask[None, :]
    elif not (mask.ndim == 2 and mask.shape in ((1, w), (h, w))):
        raise InputError(source, f"dataset 'mask' has shape {mask.shape}, which does not match k-space "
                                 f"(H, W) = {(h, w)}: expected ({w},), (1, {w}) or ({h}, {w})")
    if not np.all(np.isfinite(mask)):
        raise InputError(source, "dataset 'mask' contains non-finite values")
    mask = (mask != 0).astype(np.float32)
    if mask.sum() == 0:
        raise InputError(source, "dataset 'mask' is empty: no sampled k-space columns")
    return mask


def read_fastmri(path: str | Path, slices: SliceSelection = None,
                 remove_oversampling: bool = True) -> MRIAcquisition:
    """Read a fastMRI HDF5 file (multi- or single-coil) into an ``MRIAcquisition``.

    ``slices``: a ``slice``, a list of indices (any order) or None for the whole volume; only those
    slices are read from disk. ``remove_oversampling``: crop the readout to the reconSpace x size
    when k-space H is larger (not done when the file's mask is 2D, since cropping mixes rows).
    The affine comes from the ``affine`` attribute this project's writer stores, else from the
    header (pixel = reconSpace FOV / matrix, slice thickness = reconSpace FOV z), centred on the origin.
    """
    source = str(path)
    with open_hdf5(path) as f:
        if "kspace" not in f or not isinstance(f["kspace"], h5py.Dataset):
            raise InputError(source, f"no 'kspace' dataset (found: {', '.join(sorted(f.keys())) or 'nothing'})")
        ds = f["kspace"]
        if ds.ndim not in (3, 4):
            raise InputError(source, f"'kspace' must be (slices, coils, H, W) or single-coil (slices, H, W), "
                                     f"got {ds.ndim} dimensions {ds.shape}")
        if not (np.issubdtype(ds.dtype, np.complexfloating) or np.issubdtype(ds.dtype, np.floating)):
            raise InputError(source, f"'kspace' must be complex (or real floating), got dtype {ds.dtype}")
        num_slices = ds.shape[0]
        if min(ds.shape) == 0:
            raise InputError(source, f"'kspace' is empty, shape {ds.shape}")
        h, w = ds.shape[-2:]
        indices = slice_indices(slices, num_slices, source)
        kspace = read_slices(ds, indices, source)
        if kspace.ndim == 3:
            kspace = kspace[:, None]
        if not np.all(np.isfinite(kspace)):
            raise InputError(source, "'kspace' contains non-finite values (NaN or Inf)")
        kspace = kspace.astype(np.complex64, copy=False)

        header_xml, info = _read_header(f, source)
        mask = _read_mask(f, (h, w), source)
        attrs = {k: _attr_value(v) for k, v in f.attrs.items() if k not in _CONSUMED_ATTRS}
        stored_affine = f.attrs.get("affine")

        reference, ref_key = None, next((k for k in _REFERENCE_KEYS if k in f), None)
        if ref_key is not None:
            ref_ds = f[ref_key]
            if ref_ds.ndim != 3 or ref_ds.shape[0] != num_slices:
                raise InputError(source, f"'{ref_key}' has shape {ref_ds.shape}, expected "
                                         f"({num_slices}, h, w) for {num_slices} k-space slices")
            reference = read_slices(ref_ds, indices, source).astype(np.float32)
            if not np.all(np.isfinite(reference)):
                raise InputError(source, f"'{ref_key}' contains non-finite values")

    recon_shape = None
    if info is not None:
        recon_shape = (info.recon_matrix[0], info.recon_matrix[1])
    elif reference is not None:
        recon_shape = tuple(int(s) for s in reference.shape[1:])
    if reference is not None and tuple(reference.shape[1:]) != tuple(recon_shape):
        raise InputError(source, f"'{ref_key}' has image shape {reference.shape[1:]}, but the ISMRMRD header's "
                                 f"reconSpace matrix is {recon_shape}")

    if mask is None:
        try:
            mask = mask_from_kspace(kspace).mask
        except ValueError as err:
            raise InputError(source, "'kspace' is all zeros: no sampled k-space columns (empty mask)") from err

    oversampled = remove_oversampling and recon_shape is not None and recon_shape[0] < h
    if oversampled and mask.shape[0] == 1:
        kspace = remove_readout_oversampling(kspace, recon_shape[0], axis=-2)
    attrs["readout_oversampling_removed"] = bool(oversampled and mask.shape[0] == 1)
    attrs["slice_indices"] = indices

    num_low = attrs.get("num_low_frequencies", attrs.get("num_low_frequency"))
    if num_low is None:
        num_low = count_center_lines(mask[mask.shape[0] // 2])

    if stored_affine is not None and np.asarray(stored_affine).size == 16:
        full_affine = np.asarray(stored_affine, dtype=np.float64).reshape(4, 4)
    else:
        dh, dw, dz = info.recon_pixel_mm if info is not None else (1.0, 1.0, 1.0)
        image_shape = recon_shape or kspace.shape[-2:]
        center = np.array([0.0, 0.0, -(num_slices - 1) / 2 * dz])
        full_affine = mri_affine(image_shape, (dh, dw), dz, center_lps=center)

    return MRIAcquisition(kspace=kspace, mask=mask, num_low_frequencies=int(num_low), recon_shape=recon_shape,
                          reference=reference, affine=select_slices_affine(full_affine, indices),
                          header_xml=header_xml, attrs=attrs, source=source)


def _h5_attr(value: Any) -> Any | None:
    """A value h5py can store as an attribute (dicts and mixed lists as JSON text), or None to skip it."""
    if value is None:
        return None
    if isinstance(value, str | bytes | bool | int | float | np.generic | np.ndarray):
        return value
    if isinstance(value, list | tuple):
        arr = np.asarray(value)
        if arr.dtype.kind in "biuf":
            return arr
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return None


def _pixel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """(H spacing, W spacing, slice spacing) from the affine's column norms."""
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return float(norms[1]), float(norms[0]), float(norms[2])


def write_fastmri(path: str | Path, acq: MRIAcquisition, header_xml: str | None = None) -> Path:
    """Write ``acq`` in the fastMRI multi-coil layout; returns the path.

    Datasets: ``kspace`` (slices, coils, H, W) complex64, ``mask`` ((W,) for column masks, (H, W)
    otherwise) when ``acq.mask`` is set, ``reconstruction_rss`` when ``acq.reference`` is set and
    ``ismrmrd_header`` (``header_xml``, else ``acq.header_xml``, else one made from the k-space shape,
    ``recon_shape`` and the affine's voxel sizes). Attributes: ``acq.attrs`` plus ``max``, ``norm``,
    ``acquisition``, ``patient_id``, ``acceleration``, ``num_low_frequencies`` and ``affine``.
    When a made header has recon x < H, readers treat the extra readout as oversampling.
    """
    path = Path(path)
    kspace = np.asarray(acq.kspace)
    if kspace.ndim != 4:
        raise ValueError(f"kspace must be (slices, coils, H, W), got shape {kspace.shape}")
    s, c, h, w = kspace.shape
    recon_shape = tuple(acq.recon_shape) if acq.recon_shape is not None else (h, w)
    mask = None
    if acq.mask is not None:
        mask = np.asarray(acq.mask, dtype=np.float32)
        mask = mask.reshape(-1) if mask.size == w else mask.reshape(mask.shape[-2:])
        if mask.shape not in ((w,), (h, w)):
            raise ValueError(f"mask shape {acq.mask.shape} does not broadcast to k-space (H, W) = {(h, w)}")
    reference = None if acq.reference is None else np.asarray(acq.reference, dtype=np.float32)
    if reference is not None and reference.shape != (s, *recon_shape):
        raise ValueError(f"reference shape {reference.shape} != (slices, *recon_shape) = {(s, *recon_shape)}")

    attrs = dict(acq.attrs)
    attrs.pop("slice_indices", None)
    attrs.pop("readout_oversampling_removed", None)
    if reference is not None:
        attrs["max"] = float(reference.max())
        attrs["norm"] = float(np.linalg.norm(reference))
    else:
        # max of the RSS image; fftshifts only permute pixels and change phases, so they are left out
        attrs["max"] = max(float(np.sqrt((np.abs(scipy.fft.ifft2(k, norm="ortho", workers=-1)) ** 2).sum(axis=0)).max())
                           for k in kspace)
    attrs.setdefault("acquisition", "unknown")
    attrs.setdefault("patient_id", "")
    if mask is not None:
        attrs.setdefault("acceleration", float(mask.size / max(mask.sum(), 1)))
    if acq.num_low_frequencies is not None:
        attrs["num_low_frequencies"] = int(acq.num_low_frequencies)
    attrs["affine"] = np.asarray(acq.affine, dtype=np.float64).reshape(4, 4)

    if header_xml is None:
        header_xml = acq.header_xml
    if header_xml is None:
        dh, dw, dz = _pixel_sizes(acq.affine)
        accel = attrs.get("acceleration")
        header_xml = make_ismrmrd_header(
            (h, w, 1), (*recon_shape, 1), (dh * recon_shape[0], dw * recon_shape[1], dz), num_coils=c,
            num_slices=s, acceleration=int(round(accel)) if isinstance(accel, int | float) else None,
            patient_id=str(attrs["patient_id"]) or None)

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace.astype(np.complex64, copy=False), chunks=(1, c, h, w))
        if mask is not None:
            f.create_dataset("mask", data=mask)
        if reference is not None:
            f.create_dataset("reconstruction_rss", data=reference, chunks=(1, *reference.shape[1:]))
        f.create_dataset("ismrmrd_header", data=np.bytes_(header_xml.encode("utf-8")))
        for key, value in attrs.items():
            stored = _h5_attr(value)
            if stored is not None:
                f.attrs[key] = stored
    return path
