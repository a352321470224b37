"""The ISMRMRD XML header: what the readers need from it, and a writer for valid headers.

Parsing uses ElementTree and ignores namespaces and unknown elements, because vendor converters
(and fastMRI's files) add elements the strict schema binding of the ``ismrmrd`` package rejects.
Writing goes through that binding (``ismrmrd.xsd``), so written headers are schema-valid.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from pipelines.data import InputError


@dataclass(frozen=True)
class Limit:
    minimum: int
    maximum: int
    center: int


@dataclass(frozen=True)
class EncodingInfo:
    """First ``<encoding>`` of an ISMRMRD header. Matrix sizes and FOVs are (x, y, z)."""

    encoded_matrix: tuple[int, int, int]
    encoded_fov_mm: tuple[float, float, float]
    recon_matrix: tuple[int, int, int]
    recon_fov_mm: tuple[float, float, float]
    trajectory: str
    limits: dict[str, Limit] = field(default_factory=dict)
    acceleration: tuple[int, int] | None = None   # (ky, kz) parallel-imaging factors
    calibration_mode: str | None = None
    num_encodings: int = 1
    patient_id: str | None = None

    @property
    def recon_pixel_mm(self) -> tuple[float, float, float]:
        """reconSpace FOV / matrix along x, y, z (z: the slice thickness for 2D encodings)."""
        return tuple(f / max(m, 1) for f, m in zip(self.recon_fov_mm, self.recon_matrix, strict=True))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(node: ET.Element | None, *names: str) -> ET.Element | None:
    for name in names:
        if node is None:
            return None
        node = next((c for c in node if _local(c.tag) == name), None)
    return node


def _text(node: ET.Element | None, *names: str) -> str | None:
    found = _child(node, *names)
    return None if found is None or found.text is None else found.text.strip()


def _xyz(node: ET.Element | None, kind: type, what: str, source: str) -> tuple:
    values = []
    for axis in "xyz":
        text = _text(node, axis)
        if text is None:
            raise InputError(source, f"ISMRMRD header: {what} has no <{axis}>")
        try:
            values.append(kind(float(text)) if kind is int else kind(text))
        except ValueError as err:
            raise InputError(source, f"ISMRMRD header: {what}/{axis} is not a number: {text!r}") from err
    return tuple(values)


def parse_ismrmrd_header(xml: str | bytes, source: str = "<header>") -> EncodingInfo:
    """Read encoding matrix/FOV, recon matrix/FOV, limits, trajectory and parallel imaging."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise InputError(source, f"ISMRMRD header is not valid XML ({err})") from err
    encodings = [c for c in root if _local(c.tag) == "encoding"]
    if not encodings:
        raise InputError(source, "ISMRMRD header has no <encoding> section")
    enc = encodings[0]
    spaces = {}
    for name in ("encodedSpace", "reconSpace"):
        space = _child(enc, name)
        if space is None:
            raise InputError(source, f"ISMRMRD header has no <encoding>/<{name}>")
        spaces[name] = (_xyz(_child(space, "matrixSize"), int, f"{name}/matrixSize", source),
                        _xyz(_child(space, "fieldOfView_mm"), float, f"{name}/fieldOfView_mm", source))
    limits = {}
    limits_node = _child(enc, "encodingLimits")
    for node in (limits_node if limits_node is not None else []):
        try:
            limits[_local(node.tag)] = Limit(*(int(_text(node, k) or 0) for k in ("minimum", "maximum", "center")))
        except ValueError as err:
            raise InputError(source, f"ISMRMRD header: encodingLimits/{_local(node.tag)} is not integer") from err
    acceleration = None
    pi = _child(enc, "parallelImaging")
    if pi is not None:
        try:
            acceleration = (int(_text(pi, "accelerationFactor", "kspace_encoding_step_1") or 1),
                            int(_text(pi, "accelerationFactor", "kspace_encoding_step_2") or 1))
        except ValueError as err:
            raise InputError(source, "ISMRMRD header: parallelImaging/accelerationFactor is not integer") from err
    return EncodingInfo(
        encoded_matrix=spaces["encodedSpace"][0], encoded_fov_mm=spaces["encodedSpace"][1],
        recon_matrix=spaces["reconSpace"][0], recon_fov_mm=spaces["reconSpace"][1],
        trajectory=(_text(enc, "trajectory") or "cartesian").lower(), limits=limits,
        acceleration=acceleration, calibration_mode=_text(pi, "calibrationMode") if pi is not None else None,
        num_encodings=len(encodings), patient_id=_text(root, "subjectInformation", "patientID"))


def make_ismrmrd_header(encoded_shape: tuple[int, ...], recon_shape: tuple[int, ...],
                        fov_mm: tuple[float, ...], trajectory: str = "cartesian", *,
                        encoded_fov_mm: tuple[float, ...] | None = None, num_coils: int | None = None,
                        num_slices: int = 1, ky_center: int | None = None,
                        acceleration: int | None = None, calibration_mode: str = "embedded",
                        h1_frequency_hz: int = 63_870_000, field_strength_t: float | None = 1.5,
                        patient_id: str | None = None) -> str:
    """A schema-valid ISMRMRD XML header for one encoding.

    ``encoded_shape`` and ``recon_shape`` are matrix sizes (x, y[, z]) with x the readout; ``fov_mm``
    the reconSpace FOV (x, y[, z]), z being the slice thickness. The encodedSpace FOV defaults to the
    recon FOV scaled by the matrix ratio (same pixel size, as with readout oversampling).
    ``ky_center`` defaults to ``encoded y // 2``.
    """
    from ismrmrd import xsd

    def xyz(v, fill):
        v = tuple(v)
        if len(v) not in (2, 3):
            raise ValueError(f"expected (x, y) or (x, y, z), got {v!r}")
        return v if len(v) == 3 else (*v, fill)

    enc = tuple(int(v) for v in xyz(encoded_shape, 1))
    rec = tuple(int(v) for v in xyz(recon_shape, 1))
    fov = tuple(float(v) for v in xyz(fov_mm, 1.0))
    if min(enc + rec) < 1 or min(fov) <= 0:
        raise ValueError(f"matrix sizes and FOV must be positive: {enc}, {rec}, {fov}")
    if encoded_fov_mm is None:
        enc_fov = (fov[0] * enc[0] / rec[0], fov[1] * enc[1] / rec[1], fov[2])
    else:
        enc_fov = tuple(float(v) for v in xyz(encoded_fov_mm, fov[2]))
    ky_center = enc[1] // 2 if ky_center is None else int(ky_center)
    limits = xsd.encodingLimitsType(
        kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=enc[1] - 1, center=ky_center),
        kspace_encoding_step_2=xsd.limitType(minimum=0, maximum=enc[2] - 1, center=enc[2] // 2),
        slice=xsd.limitType(minimum=0, maximum=max(int(num_slices), 1) - 1, center=0),
        average=xsd.limitType(), contrast=xsd.limitType(), phase=xsd.limitType(),
        repetition=xsd.limitType(), set=xsd.limitType(), segment=xsd.limitType())
    encoding = xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=enc[0], y=enc[1], z=enc[2]),
                                           fieldOfView_mm=xsd.fieldOfViewMm(x=enc_fov[0], y=enc_fov[1], z=enc_fov[2])),
        reconSpace=xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=rec[0], y=rec[1], z=rec[2]),
                                         fieldOfView_mm=xsd.fieldOfViewMm(x=fov[0], y=fov[1], z=fov[2])),
        encodingLimits=limits,
        trajectory=xsd.trajectoryType(trajectory.lower()))
    if acceleration is not None and acceleration > 1:
        encoding.parallelImaging = xsd.parallelImagingType(
            accelerationFactor=xsd.accelerationFactorType(kspace_encoding_step_1=int(acceleration),
                                                          kspace_encoding_step_2=1),
            calibrationMode=xsd.calibrationModeType(calibration_mode))
    header = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=int(h1_frequency_hz)),
        encoding=[encoding])
    if num_coils is not None or field_strength_t is not None:
        header.acquisitionSystemInformation = xsd.acquisitionSystemInformationType(
            receiverChannels=num_coils, systemFieldStrength_T=field_strength_t)
    if patient_id:
        header.subjectInformation = xsd.subjectInformationType(patientID=str(patient_id))
    return xsd.ToXML(header, encoding="utf-8")


def _first_float(node: ET.Element | None, name: str) -> float | None:
    """The first ``<name>`` child of ``node`` as a float (ISMRMRD repeats TR/TE/TI per contrast)."""
    try:
        text = _text(node, name)
        return None if text is None else float(text)
    except ValueError:
        return None


def header_study_fields(xml: str | bytes, source: str = "<header>") -> dict[str, str]:
    """Patient and study values of an ISMRMRD header, keyed like ``pipelines.io.dicom_study.StudyInfo``, in DICOM
    formats (xs:date ``YYYY-MM-DD`` -> ``YYYYMMDD``, xs:time ``HH:MM:SS`` -> ``HHMMSS``); absent ones left out."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise InputError(source, f"ISMRMRD header is not valid XML ({err})") from err
    subject, study = _child(root, "subjectInformation"), _child(root, "studyInformation")
    found = {
        "patient_name": _text(subject, "patientName"), "patient_id": _text(subject, "patientID"),
        "patient_birth_date": _text(subject, "patientBirthdate"), "patient_sex": _text(subject, "patientGender"),
        "study_instance_uid": _text(study, "studyInstanceUID"), "study_date": _text(study, "studyDate"),
        "study_time": _text(study, "studyTime"), "accession_number": _text(study, "accessionNumber"),
        "study_description": _text(study, "studyDescription"),
        "referring_physician_name": _text(study, "referringPhysicianName"), "study_id": _text(study, "studyID"),
    }
    for key in ("patient_birth_date", "study_date"):
        if found[key]:
            found[key] = found[key][:10].replace("-", "")
    if found["study_time"]:
        found["study_time"] = found["study_time"].split("+")[0].rstrip("Z").replace(":", "")
    return {k: v for k, v in found.items() if v}


def header_mr_parameters(xml: str | bytes, source: str = "<header>") -> dict[str, float | str]:
    """MR acquisition values of an ISMRMRD header for the DICOM MR Image module, absent ones left out.

    Keys: ``repetition_time_ms``, ``echo_time_ms``, ``inversion_time_ms``, ``flip_angle_deg`` (first value of
    each), ``imaging_frequency_mhz``, ``magnetic_field_strength_t``, ``acquisition_type`` (``2D``/``3D`` from the
    encoded z matrix), ``sequence_name``, ``protocol_name``, ``patient_position``, ``system_vendor``,
    ``system_model``, ``institution_name``, ``station_name``, ``device_serial_number``.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise InputError(source, f"ISMRMRD header is not valid XML ({err})") from err
    seq, system = _child(root, "sequenceParameters"), _child(root, "acquisitionSystemInformation")
    measurement = _child(root, "measurementInformation")
    found: dict[str, float | str | None] = {
        "repetition_time_ms": _first_float(seq, "TR"), "echo_time_ms": _first_float(seq, "TE"),
        "inversion_time_ms": _first_float(seq, "TI"), "flip_angle_deg": _first_float(seq, "flipAngle_deg"),
        "magnetic_field_strength_t": _first_float(system, "systemFieldStrength_T"),
        "sequence_name": _text(seq, "sequence_type") or _text(measurement, "sequenceName"),
        "protocol_name": _text(measurement, "protocolName"),
        "patient_position": _text(measurement, "patientPosition"),
        "system_vendor": _text(system, "systemVendor"), "system_model": _text(system, "systemModel"),
        "institution_name": _text(system, "institutionName"), "station_name": _text(system, "stationName"),
        "device_serial_number": _text(system, "deviceSerialNumber"),
    }
    frequency = _first_float(_child(root, "experimentalConditions"), "H1resonanceFrequency_Hz")
    if frequency:
        found["imaging_frequency_mhz"] = frequency / 1e6
    encoded_z = _text(_child(root, "encoding"), "encodedSpace", "matrixSize", "z")
    if encoded_z is not None and encoded_z.isdigit():
        found["acquisition_type"] = "3D" if int(encoded_z) > 1 else "2D"
    return {k: v for k, v in found.items() if v is not None and v != ""}
