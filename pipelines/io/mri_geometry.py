"""Geometry shared by the MRI raw-data readers: readout oversampling removal and image affines.

Array layout (fastMRI's): k-space ``(slices, coils, H, W)`` with H the readout (ISMRMRD x, frequency
encoding) and W the phase encode (ISMRMRD y, ``kspace_encode_step_1``); masks run along W.

Readout oversampling is removed in hybrid space. With the centered orthonormal 1D transforms
``F_N`` along H, the k-space ``K`` (H rows) becomes

    K' = F_h  crop_h( F_H^-1 K )        (crop_h: keep the central h of H rows)

and because ``F_h^-1 F_h = I``, the image of ``K'`` is exactly the central h rows of the image of
``K``: the FOV along the readout shrinks, the pixel size stays.

Affines map voxel index ``(i, j, k)`` = (column W, row H, slice) of the ``(z, y, x)`` image volume to
RAS millimetres, as NIfTI stores them. MRI headers (ISMRMRD, DICOM) give directions in LPS patient
coordinates; RAS = diag(-1, -1, 1) LPS. The pixel at index ``N // 2`` along a Fourier-encoded axis is
the centre of the field of view (the origin of the centered FFT), so that is the pixel placed at the
slice position.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

# Fallback orientation when a file has none: DICOM's axial identity, columns (W) along LPS +x,
# rows (H) along LPS +y, slices along LPS +z.
DEFAULT_PHASE_DIR = (1.0, 0.0, 0.0)
DEFAULT_READ_DIR = (0.0, 1.0, 0.0)
DEFAULT_SLICE_DIR = (0.0, 0.0, 1.0)


def _centered_1d(x: np.ndarray, axis: int, inverse: bool) -> np.ndarray:
    x = scipy.fft.ifftshift(x, axes=axis)
    x = (scipy.fft.ifft if inverse else scipy.fft.fft)(x, axis=axis, norm="ortho", workers=-1)
    return scipy.fft.fftshift(x, axes=axis)


def center_crop_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """The central ``size`` entries of ``x`` along ``axis``, start ``(N - size) // 2`` (fastMRI's crop)."""
    n = x.shape[axis]
    if size > n:
        raise ValueError(f"cannot crop axis of length {n} to {size}")
    start = (n - size) // 2
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, start + size)
    return x[tuple(index)]


def remove_readout_oversampling(kspace: np.ndarray, size: int, axis: int = -2) -> np.ndarray:
    """Crop the readout FOV to ``size`` pixels in hybrid space (see module docstring); complex64 out.

    Works one leading index at a time (a slice of a volume), which bounds the temporary memory.
    """
    kspace = np.asarray(kspace)
    if kspace.shape[axis] == size:
        return kspace.astype(np.complex64, copy=False)
    axis = axis % kspace.ndim
    if kspace.ndim > 2 and axis > 0:
        return np.stack([remove_readout_oversampling(k, size, axis - 1) for k in kspace])
    hybrid = _centered_1d(kspace.astype(np.complex64, copy=False), axis, inverse=True)
    cropped = center_crop_axis(hybrid, size, axis)
    return _centered_1d(cropped, axis, inverse=False).astype(np.complex64, copy=False)


def _unit(v, fallback) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    norm = np.linalg.norm(v)
    if not np.isfinite(norm) or norm < 1e-6:
        return np.asarray(fallback, dtype=np.float64)
    return v / norm


def mri_affine(image_shape: tuple[int, int], pixel_mm: tuple[float, float], slice_step_mm: np.ndarray | float,
               center_lps: np.ndarray | None = None, read_dir=None, phase_dir=None,
               slice_dir=None) -> np.ndarray:
    """4x4 RAS affine of a ``(z, H, W)`` image volume from MRI slice geometry.

    ``image_shape`` = (H, W) of the (cropped) image, ``pixel_mm`` = (readout spacing along H, phase
    spacing along W). ``slice_step_mm`` is either the spacing along ``slice_dir`` or the LPS vector from
    one slice centre to the next. ``center_lps`` is the centre of the first slice (origin when None).
    Directions are LPS unit vectors; missing or zero ones fall back to the axial identity.
    """
    h, w = image_shape
    dh, dw = pixel_mm
    read = _unit(read_dir if read_dir is not None else DEFAULT_READ_DIR, DEFAULT_READ_DIR)
    phase = _unit(phase_dir if phase_dir is not None else DEFAULT_PHASE_DIR, DEFAULT_PHASE_DIR)
    default_slice = np.cross(phase, read)
    if np.linalg.norm(default_slice) < 1e-6:
        default_slice = np.asarray(DEFAULT_SLICE_DIR)
    slc = _unit(slice_dir if slice_dir is not None else default_slice, default_slice)
    step = np.asarray(slice_step_mm, dtype=np.float64)
    slice_vec = step if step.ndim == 1 else float(step) * slc
    columns = np.stack([phase * dw, read * dh, slice_vec], axis=1)     # LPS, (3, 3)
    center = np.zeros(3) if center_lps is None else np.asarray(center_lps, dtype=np.float64)
    origin = center - columns[:, 0] * (w // 2) - columns[:, 1] * (h // 2)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ columns
    affine[:3, 3] = LPS_TO_RAS @ origin
    return affine


def select_slices_affine(affine: np.ndarray, indices: list[int]) -> np.ndarray:
    """Affine of the sub-volume made of ``indices`` slices of a volume with ``affine``.

    The first selected slice becomes slice 0; the slice step is the spacing of an evenly spaced
    selection, or the original step when the selection is irregular (then the affine is only exact
    for the first slice; the indices are kept in the acquisition's attrs).
    """
    out = np.array(affine, dtype=np.float64)
    if not indices:
        return out
    first = indices[0]
    out[:3, 3] = affine[:3, 3] + affine[:3, 2] * first
    steps = np.diff(indices)
    if steps.size and np.all(steps == steps[0]):
        out[:3, 2] = affine[:3, 2] * steps[0]
    return out
