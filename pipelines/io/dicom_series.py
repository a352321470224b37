"""A reconstructed ``ImageVolume`` as a DICOM series: MR Image Storage or CT Image Storage, one file per slice.

Why single-frame classic IODs: every PACS and viewer takes them, and the CT reader of this package reads
them back (``pipelines.io.dicom_ct``). Files are Explicit VR Little Endian with a new SeriesInstanceUID,
SOPInstanceUIDs and (unless given) FrameOfReferenceUID; patient and study come from a ``StudyInfo``.

Geometry. The affine maps voxel ``(i, j, k)`` = (column x, row y, slice z) of the ``(z, y, x)`` volume to RAS
mm, as the NIfTI writer stores it; DICOM's patient frame is LPS, so ``L = diag(-1, -1, 1) A``. Then the row
direction cosine (along a row, increasing column) is ``L[:, 0] / |L[:, 0]|``, the column direction cosine
``L[:, 1] / |L[:, 1]|``, PixelSpacing = ``(|L[:, 1]|, |L[:, 0]|)`` (row spacing first), and slice ``k`` sits at
``L[:, 3] + k L[:, 2]``. InstanceNumber counts slices along the normal ``n = row x column``;
SliceLocation = ``position . n``; SpacingBetweenSlices and SliceThickness = ``|L[:, 2] . n|``.

Values. MR images are magnitude images scaled so that the volume maximum is 4095 (12 bits stored, no
rescale: the classic MR Image module has none), windowed at the 0.5 and 99.5 percentiles. CT images are
stored as int16 HU with RescaleSlope 1 and RescaleIntercept 0 (reading back gives HU within 0.5), or with a
larger slope if the range exceeds int16. A CT volume must say its units in ``attrs["units"]``: ``"HU"``, or
``"1/mm"`` (linear attenuation, what sinogram reconstructions give) converted with
``HU = 1000 (mu / mu_water - 1)``, ``mu_water`` from ``attrs["mu_water_per_mm"]`` or ``ct_units.MU_WATER``.

Provenance goes into Manufacturer / ManufacturerModelName / SoftwareVersions (the equipment that made the
images), a ContributingEquipmentSequence item with purpose DCM 109102 "Processing Equipment" (CID 7005:
equipment that processed data to create new instances; 109103 "Modifying Equipment" is for changing existing
instances), plus an 109101 "Acquisition Equipment" item when the raw data's header names the scanner, and
DerivationDescription.
"""

from __future__ import annotations

import copy
import datetime
import importlib.metadata
import json
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from pipelines.ct_units import MU_WATER, mu_to_hu
from pipelines.data import ImageVolume
from pipelines.io.dicom_study import DICOM_KEYWORDS, StudyInfo, is_valid_uid

MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
SOP_CLASSES = {"MR": MR_IMAGE_STORAGE, "CT": CT_IMAGE_STORAGE}
MANUFACTURER = "recon-service"
MR_MAX_STORED = 4095  # 12 bits
CT_WINDOWS = ((40.0, 400.0, "SOFT TISSUE"), (500.0, 2000.0, "BONE"))  # (center, width, explanation)
_LO, _SH, _ST = 64, 16, 1024


def recon_service_version() -> str:
    """The installed recon-service version, ``"unknown"`` when running from a source tree without metadata."""
    try:
        return importlib.metadata.version("recon-service")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _clip(text: Any, limit: int) -> str:
    """Text fit for a DICOM string VR: no backslash (the value delimiter), at most ``limit`` characters."""
    return str(text).replace("\\", "/").replace("\n", " ")[:limit]


def summarise_parameters(params: Mapping[str, Any]) -> str:
    """``key=value; ...`` sorted by key; arrays as their shape, so the text stays short and readable."""
    def show(value: Any) -> str:
        if isinstance(value, np.ndarray):
            return f"<array {'x'.join(map(str, value.shape))}>"
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(show(v) for v in value) + "]"
        if isinstance(value, Mapping):
            return json.dumps(value, sort_keys=True, default=lambda o: type(o).__name__)
        return str(value)

    return "; ".join(f"{key}={show(params[key])}" for key in sorted(params, key=str))


@dataclass(frozen=True)
class Provenance:
    """What made the images: method, pipeline, model and weights, engine, software version, parameters."""

    method: str                                 # registry name, e.g. "recurrentvarnet", "fbp"
    pipeline: str | None = None                 # e.g. "mri-recurrentvarnet"; ManufacturerModelName
    model_id: str | None = None
    weights_sha256: str | None = None
    engine_provider: str | None = None          # e.g. "onnxruntime:CPUExecutionProvider", "torch-cpu"
    software_version: str = field(default_factory=recon_service_version)
    parameters: dict[str, Any] = field(default_factory=dict)
    institution_name: str | None = None

    @classmethod
    def from_volume(cls, volume: ImageVolume, pipeline: str | None = None) -> Provenance:
        """From the attrs a reconstruction sets (``method``, ``model_id``, ``weights_sha256``, ``engine``,
        ``params``), see ``pipelines.pipeline.reconstruct``."""
        attrs = volume.attrs
        if not attrs.get("method"):
            raise ValueError("volume.attrs has no 'method'; give a Provenance with the method explicitly")
        return cls(method=str(attrs["method"]), pipeline=pipeline, model_id=attrs.get("model_id"),
                   weights_sha256=attrs.get("weights_sha256"), engine_provider=attrs.get("engine"),
                   parameters=dict(attrs.get("params") or {}))

    @property
    def model_name(self) -> str:
        return _clip(self.pipeline or self.method, _LO)

    def software_versions(self) -> list[str]:
        """SoftwareVersions values: service version, model or method, engine. At most 63 characters each: LO
        allows 64, and the space that pads an odd-length multi-value field would go to the last value."""
        limit = _LO - 1
        values = [_clip(f"{MANUFACTURER} {self.software_version}", limit)]
        if self.model_id:
            sha = f" sha256:{self.weights_sha256[:12]}" if self.weights_sha256 else ""
            values.append(_clip(self.model_id, limit - len(sha)) + sha)
        else:
            values.append(_clip(f"method {self.method}", limit))
        if self.engine_provider:
            values.append(_clip(self.engine_provider, limit))
        return values

    def description(self) -> str:
        """One line for ContributionDescription / DerivationDescription (ST, 1024 characters)."""
        parts = [f"method {self.method}"]
        if self.pipeline:
            parts.append(f"pipeline {self.pipeline}")
        if self.model_id:
            parts.append(f"model {self.model_id}")
        if self.weights_sha256:
            parts.append(f"weights sha256 {self.weights_sha256}")
        if self.engine_provider:
            parts.append(f"engine {self.engine_provider}")
        parts.append(f"{MANUFACTURER} {self.software_version}")
        if self.parameters:
            parts.append(f"parameters {summarise_parameters(self.parameters)}")
        return _clip(", ".join(parts), _ST)


@dataclass(frozen=True)
class SliceGeometry:
    """DICOM Image Plane values of each slice, in LPS mm."""

    row_cosines: np.ndarray         # (3,) direction of increasing column index
    column_cosines: np.ndarray      # (3,) direction of increasing row index
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    positions: np.ndarray           # (slices, 3) ImagePositionPatient
    normal: np.ndarray              # row x column
    slice_spacing: float            # |step . normal|; 0 for one slice without an extent along the normal
    instance_numbers: np.ndarray    # (slices,) 1-based, increasing along the normal

    @property
    def slice_locations(self) -> np.ndarray:
        return self.positions @ self.normal


def slice_geometry(affine: np.ndarray, num_slices: int) -> SliceGeometry:
    """DICOM geometry of a ``(num_slices, y, x)`` volume with this RAS affine (see the module docstring).

    Raises ``ValueError`` for a non-finite or degenerate affine and for in-plane axes that are not orthogonal
    (DICOM pixels are rectangles).
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    u, v, step, origin = lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3]
    dc, dr = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if dc < 1e-9 or dr < 1e-9:
        raise ValueError(f"affine has a zero in-plane voxel size (x {dc:g} mm, y {dr:g} mm)")
    row, col = u / dc, v / dr
    if abs(float(row @ col)) > 1e-4:
        raise ValueError(f"affine in-plane axes are not orthogonal (cos = {float(row @ col):.2g}); "
                         "DICOM images need perpendicular rows and columns")
    col = col - (row @ col) * row
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    along = float(step @ normal)
    if num_slices > 1 and abs(along) < 1e-6:
        raise ValueError("affine slice axis lies in the image plane: slices would coincide")
    positions = origin[None, :] + np.arange(num_slices)[:, None] * step[None, :]
    instance_numbers = np.empty(num_slices, dtype=int)
    instance_numbers[np.argsort(positions @ normal, kind="stable")] = np.arange(1, num_slices + 1)
    return SliceGeometry(row, col, (dr, dc), positions, normal, abs(along), instance_numbers)


def _number(value: float) -> str:
    """A DS value: 10 significant digits (1e-7 mm at 1 m) in at most 16 characters, no negative zero."""
    return f"{float(value) + 0.0:.10g}"


def _ds(values: Iterable[float]) -> list[str]:
    return [_number(v) for v in values]


# ---- pixel values ------------------------------------------------------------------------------------------

def _mr_pixels(data: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """uint16 magnitude with the volume max at 4095, and (window center, width) from robust percentiles."""
    magnitude = np.abs(data).astype(np.float64)
    peak = float(magnitude.max())
    scale = MR_MAX_STORED / peak if peak > 0 else 1.0
    stored = np.rint(magnitude * scale).astype(np.uint16)
    lo, hi = np.percentile(stored, [0.5, 99.5])
    return stored, (float(lo + hi) / 2, max(float(hi - lo), 1.0))


def _ct_hounsfield(volume: ImageVolume) -> np.ndarray:
    if np.iscomplexobj(volume.data):
        raise ValueError("CT volume is complex; CT images must be real (HU or attenuation)")
    units = volume.attrs.get("units")
    if units == "HU":
        return np.asarray(volume.data, dtype=np.float64)
    if units == "1/mm":
        return mu_to_hu(volume.data, float(volume.attrs.get("mu_water_per_mm", MU_WATER)))
    raise ValueError(f"CT volume attrs['units'] must be 'HU' or '1/mm', got {units!r}")


@dataclass(frozen=True)
class StoredPixels:
    """The pixel values of a series as stored, with their windows (and for CT the rescale to HU).

    ``write_dicom_series`` computes them from the volume (the module docstring's rules) unless given: a map that
    is not an image of the volume's own values, such as its uncertainty map (``pipelines.io.dicom_uncertainty``),
    brings its own."""

    stored: np.ndarray                          # (z, y, x) uint16 (MR, 12 bits used) or int16 (CT)
    window_centers: list[float]
    window_widths: list[float]
    explanations: list[str]
    slope: float = 1.0                          # CT: HU = stored * slope + intercept
    intercept: float = 0.0


def volume_pixels(volume: ImageVolume, modality: str) -> StoredPixels:
    """The stored values of ``volume``'s images: MR magnitude scaled to 4095, CT in HU (module docstring)."""
    if modality == "MR":
        stored, (center, width) = _mr_pixels(np.asarray(volume.data))
        return StoredPixels(stored, [center], [width], ["PERCENTILE 0.5-99.5"])
    stored, slope, intercept = _ct_pixels(_ct_hounsfield(volume))
    return StoredPixels(stored, [c for c, _, _ in CT_WINDOWS], [w for _, w, _ in CT_WINDOWS],
                        [e for _, _, e in CT_WINDOWS], slope, intercept)


def _ct_pixels(hu: np.ndarray) -> tuple[np.ndarray, float, float]:
    """int16 stored values, RescaleSlope, RescaleIntercept with ``HU = stored * slope + intercept``."""
    lo, hi = float(hu.min()), float(hu.max())
    info = np.iinfo(np.int16)
    if lo >= info.min and hi <= info.max:
        slope, intercept = 1.0, 0.0
    else:  # beyond int16 (not a plausible CT, but keep it): spread the range over all 65536 values
        slope = (hi - lo) / (info.max - info.min)
        intercept = lo - info.min * slope
    stored = np.clip(np.rint((hu - intercept) / slope), info.min, info.max).astype(np.int16)
    return stored, slope, intercept


# ---- datasets ----------------------------------------------------------------------------------------------

def _now() -> datetime.datetime:
    return datetime.datetime.now().astimezone()


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _contributing_equipment(provenance: Provenance, mr: Mapping[str, Any], when: datetime.datetime,
                            derived: bool) -> Sequence:
    items = []
    vendor = mr.get("system_vendor")
    if vendor:  # the scanner that acquired the raw data
        scanner = Dataset()
        scanner.PurposeOfReferenceCodeSequence = Sequence([_code("109101", "DCM", "Acquisition Equipment")])
        scanner.Manufacturer = _clip(vendor, _LO)
        for key, keyword, limit in (("system_model", "ManufacturerModelName", _LO),
                                    ("institution_name", "InstitutionName", _LO),
                                    ("station_name", "StationName", _SH),
                                    ("device_serial_number", "DeviceSerialNumber", _LO)):
            if mr.get(key):
                setattr(scanner, keyword, _clip(mr[key], limit))
        items.append(scanner)
    recon = Dataset()
    recon.PurposeOfReferenceCodeSequence = Sequence([_code("109102", "DCM", "Processing Equipment")])
    recon.Manufacturer = MANUFACTURER
    recon.ManufacturerModelName = provenance.model_name
    if provenance.institution_name:
        recon.InstitutionName = _clip(provenance.institution_name, _LO)
    recon.SoftwareVersions = provenance.software_versions()
    recon.ContributionDateTime = when.strftime("%Y%m%d%H%M%S.%f%z")
    source = "source images" if derived else "raw data"
    recon.ContributionDescription = _clip(f"Reconstruction from {source}: {provenance.description()}", _ST)
    items.append(recon)
    return Sequence(items)


def _common(modality: str, study: StudyInfo, provenance: Provenance, series_uid: str, frame_uid: str,
            series_number: int, series_description: str, when: datetime.datetime, derived: bool,
            mr: Mapping[str, Any]) -> Dataset:
    """Attributes shared by every slice: patient, study, series, frame of reference, equipment, provenance."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S.%f")
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID = SOP_CLASSES[modality]
    for name, keyword in DICOM_KEYWORDS.items():
        value = getattr(study, name)
        if value is not None or keyword != "StudyDescription":  # the only type 3 one: left out when unknown
            setattr(ds, keyword, value or "")
    if not study.study_instance_uid:  # a new study, created now
        ds.StudyInstanceUID = generate_uid()
        ds.StudyDate, ds.StudyTime = ds.StudyDate or date, ds.StudyTime or time
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = _clip(series_description, _LO)
    ds.Laterality = ""  # 2C for paired body parts; the body part is not known here
    ds.PatientPosition = _clip(mr.get("patient_position", ""), _SH)
    if mr.get("protocol_name"):
        ds.ProtocolName = _clip(mr["protocol_name"], _LO)
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = provenance.model_name
    if provenance.institution_name:
        ds.InstitutionName = _clip(provenance.institution_name, _LO)
    ds.SoftwareVersions = provenance.software_versions()
    ds.ContributingEquipmentSequence = _contributing_equipment(provenance, mr, when, derived)
    ds.ContentDate, ds.ContentTime = date, time
    value_3 = "AXIAL" if modality == "CT" else "OTHER"
    ds.ImageType = ["DERIVED", "SECONDARY", value_3] if derived else ["ORIGINAL", "PRIMARY", value_3]
    source = "source images" if derived else "raw data"
    ds.DerivationDescription = _clip(f"Reconstructed from {source}: {provenance.description()}", _ST)
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    return ds


def _mr_module(ds: Dataset, mr: Mapping[str, Any]) -> None:
    """MR Image module: research-mode sequence values; timing and field from the raw data's header if known."""
    ds.ScanningSequence = "RM"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = mr.get("acquisition_type", "") if mr.get("acquisition_type") in ("2D", "3D") else ""
    ds.RepetitionTime = _number(mr["repetition_time_ms"]) if "repetition_time_ms" in mr else ""
    ds.EchoTime = _number(mr["echo_time_ms"]) if "echo_time_ms" in mr else ""
    ds.EchoTrainLength = ""
    if "flip_angle_deg" in mr:
        ds.FlipAngle = _number(mr["flip_angle_deg"])
    if "imaging_frequency_mhz" in mr:
        ds.ImagingFrequency = _number(mr["imaging_frequency_mhz"])
        ds.ImagedNucleus = "1H"  # ISMRMRD gives the H1 resonance frequency
    if "magnetic_field_strength_t" in mr:
        ds.MagneticFieldStrength = _number(mr["magnetic_field_strength_t"])
    if mr.get("sequence_name"):
        ds.SequenceName = _clip(mr["sequence_name"], _SH)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0


def _ct_module(ds: Dataset, provenance: Provenance, slope: float, intercept: float, kvp: Any) -> None:
    ds.KVP = _number(kvp) if kvp not in (None, "") else ""
    ds.AcquisitionNumber = ""
    kernel = provenance.parameters.get("filter") if provenance.method == "fbp" else None
    if kernel:
        ds.ConvolutionKernel = _clip(kernel, _SH)
    ds.RescaleIntercept = _number(intercept)
    ds.RescaleSlope = _number(slope)
    ds.RescaleType = "HU"
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1


def _check_volume(volume: ImageVolume, modality: str) -> np.ndarray:
    if modality not in SOP_CLASSES:
        raise ValueError(f"unknown modality {modality!r}; choose one of {', '.join(SOP_CLASSES)}")
    data = np.asarray(volume.data)
    if data.ndim != 3:
        raise ValueError(f"DICOM series writer expects a (z, y, x) volume, got shape {data.shape}")
    if data.size == 0:
        raise ValueError(f"volume is empty (shape {data.shape})")
    if not (np.issubdtype(data.dtype, np.number) and not np.issubdtype(data.dtype, np.timedelta64)):
        raise ValueError(f"volume data must be numeric, got {data.dtype}")
    if not np.all(np.isfinite(data)):
        raise ValueError("volume contains non-finite values (NaN or Inf)")
    return data


def write_dicom_series(volume: ImageVolume, out_dir: str | Path, modality: Literal["MR", "CT"], study: StudyInfo,
                       provenance: Provenance, series_description: str | None = None, series_number: int = 1000,
                       derived: bool = False, frame_of_reference_uid: str | None = None,
                       pixels: StoredPixels | None = None, attributes: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``volume`` as a new series in ``study``: one file per slice, returned in InstanceNumber order.

    ``derived`` marks images made from other images (DERIVED\\SECONDARY) rather than from raw data
    (ORIGINAL\\PRIMARY). ``frame_of_reference_uid`` reuses a source's frame when the volume lies in the same
    patient coordinates; otherwise a new one is made. MR acquisition values are taken from
    ``volume.attrs["mr_parameters"]`` (keys of ``pipelines.io.mrd_header.header_mr_parameters``); the CT tube
    voltage from ``volume.attrs["kvp"]``. ``pixels``: the stored values to write instead of the volume's own
    (``StoredPixels``, the volume's shape); ``attributes``: DICOM keywords set on every file last (e.g.
    ImageType, ImageComments of a derived map). Raises ``ValueError`` for a volume that is not 3D, empty or not
    finite, an unknown modality, bad geometry or CT units, and ``FileExistsError`` rather than overwrite files.
    """
    data = _check_volume(volume, modality)
    if not isinstance(series_number, int) or not 0 <= series_number < 2**31:
        raise ValueError(f"series_number must be an integer in [0, 2^31), got {series_number!r}")
    if frame_of_reference_uid is not None and not is_valid_uid(frame_of_reference_uid):
        raise ValueError(f"frame_of_reference_uid is not a valid UID: {frame_of_reference_uid!r}")
    geometry = slice_geometry(volume.affine, data.shape[0])
    mr = dict(volume.attrs.get("mr_parameters") or {}) if modality == "MR" else {}
    if pixels is None:
        pixels = volume_pixels(volume, modality)
    elif pixels.stored.shape != data.shape:
        raise ValueError(f"stored pixels have shape {pixels.stored.shape}, the volume {data.shape}")

    out_dir = Path(out_dir)
    names = [out_dir / f"{modality}_{series_number}_{n:04d}.dcm" for n in geometry.instance_numbers]
    existing = [p for p in names if p.exists()]
    if existing:
        raise FileExistsError(f"{existing[0]} already exists; write each series into a new directory")
    out_dir.mkdir(parents=True, exist_ok=True)

    when = _now()
    description = series_description or f"{provenance.method} reconstruction"
    base = _common(modality, study, provenance, str(generate_uid()), frame_of_reference_uid or str(generate_uid()),
                   series_number, description, when, derived, mr)
    if modality == "MR":
        _mr_module(base, mr)
    else:
        _ct_module(base, provenance, pixels.slope, pixels.intercept, volume.attrs.get("kvp"))
    base.PixelSpacing = _ds(geometry.pixel_spacing)
    base.ImageOrientationPatient = _ds(np.concatenate([geometry.row_cosines, geometry.column_cosines]))
    if geometry.slice_spacing > 0:
        base.SliceThickness = _number(volume.attrs.get("slice_thickness_mm", geometry.slice_spacing))
        base.SpacingBetweenSlices = _number(geometry.slice_spacing)
    else:
        base.SliceThickness = ""
    base.Rows, base.Columns = int(data.shape[1]), int(data.shape[2])
    base.WindowCenter = _ds(pixels.window_centers)
    base.WindowWidth = _ds(pixels.window_widths)
    base.WindowCenterWidthExplanation = list(pixels.explanations)
    for keyword, value in (attributes or {}).items():
        setattr(base, keyword, value)

    paths = []
    for k in np.argsort(geometry.instance_numbers):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = int(geometry.instance_numbers[k])
        ds.ImagePositionPatient = _ds(geometry.positions[k])
        ds.SliceLocation = _number(geometry.slice_locations[k])
        values = pixels.stored[k].astype("<i2" if modality == "CT" else "<u2")
        ds.add_new(0x7FE00010, "OW", np.ascontiguousarray(values).tobytes())
        ds.file_meta = _file_meta(ds)
        path = names[k]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _clip(f"RECON_{recon_service_version()}", _SH)
    return meta


def zip_series(paths: Iterable[str | Path], zip_path: str | Path) -> Path:
    """The files in one zip archive, each under its file name (what the HTTP API returns)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no files to zip")
    names = [p.name for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"several files are named {duplicates[0]}; names must be unique in the zip")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"{missing[0]}: not a file")
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            archive.write(path, arcname=path.name)
    return zip_path
