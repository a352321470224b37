"""NIfTI volumes in and out.

In memory a volume is ``(z, y, x)`` with a 4x4 affine mapping voxel index ``(i, j, k)`` = ``(x, y, z)``
to RAS mm, as NIfTI stores it; on disk NIfTI arrays are ``(x, y, z)``, so axes are reversed on the way.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from pipelines.data import ImageVolume, InputError


def write_nifti(path: str | Path, volume: np.ndarray, affine: np.ndarray) -> Path:
    """Write a real ``(z, y, x)`` volume (magnitude is taken of complex data) as NIfTI-1."""
    path = Path(path)
    data = np.abs(volume) if np.iscomplexobj(volume) else volume
    if data.ndim != 3:
        raise ValueError(f"NIfTI writer expects a (z, y, x) volume, got shape {data.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"affine must be a finite 4x4 matrix, got {affine!r}")
    image = nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)).astype(np.float32), affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def read_nifti(path: str | Path) -> ImageVolume:
    """Read a 3D NIfTI file into a ``(z, y, x)`` float32 volume with its affine."""
    path = Path(path)
    try:
        image = nib.load(str(path))
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except FileNotFoundError as err:
        raise InputError(path, "file not found") from err
    except Exception as err:  # nibabel raises several types for a damaged or foreign file
        raise InputError(path, f"not a readable NIfTI file ({err})") from err
    data = np.squeeze(data)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise InputError(path, f"expected a 3D volume, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise InputError(path, "volume contains non-finite values")
    return ImageVolume(np.ascontiguousarray(data.transpose(2, 1, 0)), np.asarray(image.affine, np.float64),
                       {"source": str(path)})
