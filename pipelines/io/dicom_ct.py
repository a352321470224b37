"""A DICOM CT series to an ``ImageVolume`` in Hounsfield units.

Slices are sorted by their position along the slice normal ``n = r x c`` (``r``, ``c`` = the row and column
direction cosines of ImageOrientationPatient), ``HU = stored * RescaleSlope + RescaleIntercept``.
The affine maps voxel (i = column, j = row, k = slice) to RAS mm: DICOM's patient frame is LPS, so
``RAS = diag(-1, -1, 1) (IPP_0 + i dc r + j dr c + k step)`` with PixelSpacing = (dr, dc) and ``step`` the mean
position difference of consecutive sorted slices.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from pipelines.data import ImageVolume, InputError
from pipelines.io.dicom_study import StudyInfo

_ORIENTATION_TOL = 1e-4
_SPACING_TOL = 0.05  # relative deviation of a slice gap from the median before it counts as non-uniform


def _collect(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(paths, (str, Path)):
        root = Path(paths)
        if root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                           and p.name.upper() != "DICOMDIR")
            if not files:
                raise InputError(root, "directory contains no files")
            return files
        return [root]
    files = [Path(p) for p in paths]
    if not files:
        raise InputError("<dicom>", "no DICOM files given")
    return files


def _read(path: Path) -> pydicom.Dataset:
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        return pydicom.dcmread(str(path))
    except InvalidDicomError as err:
        raise InputError(path, f"not a DICOM file ({err})") from err
    except Exception as err:  # pydicom raises several types for truncated or damaged files
        raise InputError(path, f"unreadable DICOM file ({err})") from err


def _floats(ds: pydicom.Dataset, keyword: str, count: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None:
        raise InputError(path, f"missing {keyword}")
    arr = np.asarray([float(v) for v in (value if isinstance(value, Iterable) else [value])], dtype=np.float64)
    if arr.size != count or not np.all(np.isfinite(arr)):
        raise InputError(path, f"{keyword} must be {count} finite numbers, got {value!r}")
    return arr


def read_dicom_ct(paths: str | Path | Iterable[str | Path]) -> ImageVolume:
    """Read one CT series (a directory, one file or a list of files) as a ``(z, y, x)`` float32 HU volume.

    Raises ``InputError`` for unreadable files, non-CT modality, missing geometry tags, files from different
    series, orientations or image sizes, duplicate slice positions and missing slices (gaps in the spacing).
    """
    files = _collect(paths)
    datasets = [(p, _read(p)) for p in files]
    for path, ds in datasets:
        modality = str(ds.get("Modality", "")).upper()
        if modality != "CT":
            raise InputError(path, f"modality is {modality or 'missing'}, not CT")
        if "PixelData" not in ds:
            raise InputError(path, "no pixel data")
    first_path, first = datasets[0]
    series = first.get("SeriesInstanceUID")
    orientation = _floats(first, "ImageOrientationPatient", 6, first_path)
    size = (int(first.Rows), int(first.Columns))
    spacing = _floats(first, "PixelSpacing", 2, first_path)
    for path, ds in datasets[1:]:
        if ds.get("SeriesInstanceUID") != series:
            raise InputError(path, f"mixed series: SeriesInstanceUID {ds.get('SeriesInstanceUID')} differs from "
                                   f"{series} of {first_path.name}")
        if np.max(np.abs(_floats(ds, "ImageOrientationPatient", 6, path) - orientation)) > _ORIENTATION_TOL:
            raise InputError(path, f"mixed series: ImageOrientationPatient differs from {first_path.name}")
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise InputError(path, f"mixed series: image size {(int(ds.Rows), int(ds.Columns))} differs from {size}")
        if np.max(np.abs(_floats(ds, "PixelSpacing", 2, path) - spacing)) > 1e-4:
            raise InputError(path, f"mixed series: PixelSpacing differs from {first_path.name}")
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise InputError(first_path, f"ImageOrientationPatient is not two orthonormal directions: {orientation}")
    positions = np.stack([_floats(ds, "ImagePositionPatient", 3, p) for p, ds in datasets])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    datasets = [datasets[i] for i in order]
    positions, along = positions[order], along[order]
    if len(datasets) > 1:
        gaps = np.diff(along)
        dup = np.flatnonzero(gaps < 1e-3)
        if dup.size:
            a, b = datasets[dup[0]][0].name, datasets[dup[0] + 1][0].name
            raise InputError(datasets[dup[0] + 1][0], f"duplicate slice position {along[dup[0]]:.3f} mm ({a}, {b})")
        typical = float(np.median(gaps))
        bad = np.flatnonzero(np.abs(gaps - typical) > _SPACING_TOL * typical)
        if bad.size:
            k = int(bad[0])
            missing = gaps[k] / typical - 1
            what = (f"about {round(missing)} missing slice(s)" if missing > 0.5 else "non-uniform slice spacing")
            raise InputError(datasets[k + 1][0], f"{what}: gap of {gaps[k]:.3f} mm between positions "
                                                 f"{along[k]:.3f} and {along[k + 1]:.3f} mm (spacing {typical:.3f} mm)")
        step = (positions[-1] - positions[0]) / (len(datasets) - 1)
    else:
        thickness = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)
        step = normal * thickness
    slices = []
    for path, ds in datasets:
        try:
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as err:  # missing decoder, truncated pixel data
            raise InputError(path, f"cannot decode pixel data ({err})") from err
        if pixels.shape != size:
            raise InputError(path, f"pixel data shape {pixels.shape} differs from Rows x Columns {size}")
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        slices.append(pixels * slope + intercept)
    volume = np.stack(slices)
    dr, dc = spacing
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    study = StudyInfo.from_dataset(first)
    attrs = {"units": "HU", "modality": "CT", "source": str(paths) if isinstance(paths, (str, Path)) else "files",
             "source_files": [str(p) for p, _ in datasets], "series_instance_uid": str(series or ""),
             "study_instance_uid": study.study_instance_uid or "", "patient_id": study.patient_id or "",
             "slice_spacing_mm": float(np.linalg.norm(step))}
    return ImageVolume(volume, affine, attrs)
