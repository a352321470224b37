"""A volume's uncertainty map (``ImageVolume.uncertainty``, the std over a sampler's draws) as its own DICOM series.

Why a series of its own: a PACS files it in the study next to the image series, with its own SeriesInstanceUID,
SeriesNumber and a SeriesDescription that says what it is, and a viewer shows it side by side with the images (same
FrameOfReferenceUID when the caller passes the image series' one; the geometry is the volume's).

Values, so that a std reads in the units of the image series it belongs to:

* MR: the classic MR Image module has no rescale, so the map is stored on the image series' own scale: stored =
  ``std x 4095 / max |image|`` (the factor ``write_dicom_series`` used for the images), clipped at 4095. A std of
  stored value 100 is a spread of 100 image-series units.
* CT: the std in HU, int16 with RescaleSlope 1 (a std of attenuation ``s`` in 1/mm is ``1000 s / mu_water``; no
  -1000 offset: it is a spread, not a tissue value).

The window spans the map's 0.5 to 99.5 percentile (tissue windows are meaningless for a spread). ImageType is
DERIVED\\PRIMARY\\<the image series' value 3> (a fourth value naming the map is not a defined term of the CT IOD);
SeriesDescription, DerivationDescription and ImageComments say what the values are.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipelines.ct_units import MU_WATER
from pipelines.data import ImageVolume
from pipelines.io.dicom_series import MR_MAX_STORED, Provenance, StoredPixels, write_dicom_series
from pipelines.io.dicom_study import StudyInfo

UNCERTAINTY_SERIES_NUMBER = 1001  # the image series is 1000 (write_dicom_series' default)
_ST, _LT = 1024, 10240


def uncertainty_description(pipeline: str) -> str:
    """The SeriesDescription of the uncertainty series of ``pipeline``'s reconstruction (LO: at most 64)."""
    return f"Uncertainty map (standard deviation) of {pipeline}"[:64]


def _window(stored: np.ndarray) -> tuple[list[float], list[float], list[str]]:
    lo, hi = np.percentile(stored, [0.5, 99.5])
    return [float(lo + hi) / 2], [max(float(hi - lo), 1.0)], ["PERCENTILE 0.5-99.5"]


def uncertainty_pixels(volume: ImageVolume, modality: Literal["MR", "CT"]) -> tuple[StoredPixels, str]:
    """The stored values of ``volume.uncertainty`` (module docstring) and a sentence saying what they are."""
    std = np.asarray(volume.uncertainty, dtype=np.float64)
    if std.shape != np.shape(volume.data):
        raise ValueError(f"uncertainty map has shape {std.shape}, the volume {np.shape(volume.data)}")
    if not np.all(np.isfinite(std)) or std.min() < 0:
        raise ValueError("uncertainty map must be finite and non-negative")
    if modality == "MR":
        peak = float(np.abs(volume.data).max())
        scale = MR_MAX_STORED / peak if peak > 0 else 1.0
        stored = np.clip(np.rint(std * scale), 0, MR_MAX_STORED).astype(np.uint16)
        return (StoredPixels(stored, *_window(stored)),
                f"standard deviation on the image series' scale (image maximum {MR_MAX_STORED})")
    units = volume.attrs.get("units")
    if units == "1/mm":
        std = 1000.0 * std / float(volume.attrs.get("mu_water_per_mm", MU_WATER))
    elif units != "HU":
        raise ValueError(f"CT volume attrs['units'] must be 'HU' or '1/mm', got {units!r}")
    info = np.iinfo(np.int16)
    stored = np.clip(np.rint(std), 0, info.max).astype(np.int16)
    return StoredPixels(stored, *_window(stored)), "standard deviation in HU"


def write_uncertainty_series(volume: ImageVolume, out_dir: str | Path, modality: Literal["MR", "CT"],
                             study: StudyInfo, provenance: Provenance, series_description: str,
                             series_number: int = UNCERTAINTY_SERIES_NUMBER, frame_of_reference_uid: str | None = None,
                             what: str | None = None) -> list[Path]:
    """Write ``volume.uncertainty`` as a new series of ``study`` (give it a StudyInstanceUID so that it is the
    image series' study); one file per slice, returned in InstanceNumber order. ``what``: how the map was made
    (e.g. "standard deviation over 4 draws"), for DerivationDescription. ``ValueError`` when the volume has no
    uncertainty map or a bad one; otherwise as ``write_dicom_series``."""
    if volume.uncertainty is None:
        raise ValueError("the volume has no uncertainty map")
    pixels, units = uncertainty_pixels(volume, modality)
    made = what or "standard deviation over the sampler's draws"
    image_type = "AXIAL" if modality == "CT" else "OTHER"
    attributes: Mapping[str, Any] = {
        "ImageType": ["DERIVED", "PRIMARY", image_type],
        "DerivationDescription": f"Uncertainty map ({made}) of the reconstruction: {provenance.description()}"[:_ST],
        "ImageComments": f"Pixel values: {units}; {made}."[:_LT],
    }
    return write_dicom_series(volume, out_dir, modality, study, provenance, series_description=series_description,
                              series_number=series_number, frame_of_reference_uid=frame_of_reference_uid,
                              pixels=pixels, attributes=attributes)
