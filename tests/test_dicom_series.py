"""DICOM series writer: dciodvfy-valid MR and CT series, geometry and values that read back, study and provenance."""

import zipfile

import numpy as np
import pydicom
import pytest
from dicom_checks import ALLOWED_WARNING, assert_valid, dciodvfy
from pydicom.data import get_testdata_file
from pydicom.uid import UID

from pipelines.ct_units import MU_WATER, mu_to_hu
from pipelines.data import ImageVolume, MRIAcquisition
from pipelines.io.dicom_ct import read_dicom_ct
from pipelines.io.dicom_series import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    Provenance,
    write_dicom_series,
    zip_series,
)
from pipelines.io.dicom_study import StudyInfo
from pipelines.io.mrd_header import header_mr_parameters, make_ismrmrd_header

SHA = "0123456789abcdef" * 4
MODEL = "recurrentvarnet-brain-sim"
PROVIDER = "onnxruntime:CPUExecutionProvider"
STUDY = {"patient_name": "Doe^Jane", "patient_id": "P-0042", "patient_birth_date": "19700102", "patient_sex": "F",
         "study_instance_uid": "1.2.826.0.1.3680043.8.498.12345", "study_date": "20240315", "study_time": "101500",
         "accession_number": "ACC123", "study_description": "Brain MRI", "referring_physician_name": "House^Gregory",
         "study_id": "S1"}


def oblique_affine(handedness: int = 1) -> np.ndarray:
    """RAS affine of a (z, y, x) grid: rotated about two axes, voxels 0.9 x 1.1 x 3.0 mm, offset origin."""
    a, b = 0.3, 0.5
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rx @ rz @ np.diag([0.9, 1.1, 3.0 * handedness])
    affine[:3, 3] = [12.5, -20.25, 31.0]
    return affine


def mr_volume(affine=None, **attrs) -> ImageVolume:
    """Complex image whose magnitude has structure (a smooth blob and an edge), 3 x 32 x 24."""
    z, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(24), indexing="ij")
    magnitude = 100 * np.exp(-((y - 15) ** 2 + (x - 11) ** 2) / 60.0) * (1 + 0.2 * z) + 20 * (x > 16)
    phase = np.exp(1j * 0.1 * (x + y))
    return ImageVolume((magnitude * phase).astype(np.complex64), oblique_affine() if affine is None else affine,
                       {"method": "recurrentvarnet", **attrs})


def ct_volume(affine=None) -> ImageVolume:
    rng = np.random.default_rng(1)
    hu = rng.uniform(-1000, 1500, size=(3, 32, 24)).astype(np.float32)
    hu[:, :4] = -1000.0
    return ImageVolume(hu, oblique_affine() if affine is None else affine, {"units": "HU", "method": "fbp"})


def mr_provenance(**kw) -> Provenance:
    return Provenance(method="recurrentvarnet", pipeline="mri-recurrentvarnet", model_id=MODEL, weights_sha256=SHA,
                      engine_provider=PROVIDER, parameters={"engine": "onnx", "fft": "matmul"}, **kw)


def ct_provenance() -> Provenance:
    return Provenance(method="fbp", pipeline="ct-fbp", parameters={"filter": "hann", "cutoff": 1.0})


def read_all(paths) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in paths]


def affine_from_files(datasets: list[pydicom.Dataset]) -> tuple[np.ndarray, np.ndarray]:
    """(z, y, x) stored pixels in InstanceNumber order and the RAS affine, computed here from the DICOM tags."""
    datasets = sorted(datasets, key=lambda ds: int(ds.InstanceNumber))
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    dr, dc = (float(v) for v in datasets[0].PixelSpacing)
    first = np.array([float(v) for v in datasets[0].ImagePositionPatient])
    last = np.array([float(v) for v in datasets[-1].ImagePositionPatient])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = iop[:3] * dc, iop[3:] * dr
    lps[:3, 2] = (last - first) / (len(datasets) - 1)
    lps[:3, 3] = first
    return np.stack([ds.pixel_array for ds in datasets]), np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


# ---- validity -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["mr", "mr-derived", "ct", "ct-derived"])
def test_every_file_passes_dciodvfy(tmp_path, case):
    study = StudyInfo.from_mapping(STUDY)
    derived = case.endswith("derived")
    if case.startswith("mr"):
        paths = write_dicom_series(mr_volume(), tmp_path, "MR", study, mr_provenance(), derived=derived)
    else:
        paths = write_dicom_series(ct_volume(), tmp_path, "CT", study, ct_provenance(), derived=derived)
    assert len(paths) == 3
    assert_valid(paths)
    ds = pydicom.dcmread(paths[0])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == (MR_IMAGE_STORAGE if case.startswith("mr") else CT_IMAGE_STORAGE)
    expected = ["DERIVED", "SECONDARY"] if derived else ["ORIGINAL", "PRIMARY"]
    assert list(ds.ImageType)[:2] == expected
    assert ds.ImageType[2] == ("AXIAL" if case.startswith("ct") else "OTHER")


def test_empty_study_is_valid_with_generated_study_uid_and_date(tmp_path):
    paths = write_dicom_series(mr_volume(), tmp_path, "MR", StudyInfo(), mr_provenance())
    for path in paths:  # unknown patient ID and study ID are allowed (type 2) but DICOMDIR would need them
        problems = [p for p in dciodvfy(path) if ALLOWED_WARNING not in p]
        assert not [p for p in problems if p.startswith("Error")], problems
        assert all("needed to build DICOMDIR" in p for p in problems), problems
    datasets = read_all(paths)
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1 and UID(datasets[0].StudyInstanceUID).is_valid
    assert datasets[0].StudyDate == datasets[0].ContentDate and datasets[0].PatientID == ""


def test_mr_values_from_an_ismrmrd_header_are_written_and_valid(tmp_path):
    from ismrmrd import xsd
    from xsdata.models.datatype import XmlDate, XmlTime

    header = xsd.CreateFromDocument(make_ismrmrd_header((48, 24), (24, 24), (240.0, 240.0, 5.0), num_coils=4,
                                                        field_strength_t=3.0, h1_frequency_hz=123_200_000))
    header.sequenceParameters = xsd.sequenceParametersType(TR=[2500.0], TE=[12.5], TI=[900.0], flipAngle_deg=[90.0],
                                                           sequence_type="TurboSpinEcho")
    header.acquisitionSystemInformation.systemVendor = "ACME Imaging"
    header.acquisitionSystemInformation.systemModel = "Research 3T"
    header.measurementInformation = xsd.measurementInformationType(patientPosition=xsd.patientPositionType.HFS,
                                                                   protocolName="t2_tse_ax")
    header.subjectInformation = xsd.subjectInformationType(patientName="Roe^Rick", patientID="MRD-7",
                                                           patientBirthdate=XmlDate(1980, 5, 6), patientGender="M")
    header.studyInformation = xsd.studyInformationType(studyDate=XmlDate(2024, 2, 29), studyTime=XmlTime(8, 30, 15),
                                                       studyID="ST9", accessionNumber=777,
                                                       studyInstanceUID="1.2.3.4.5")
    xml = xsd.ToXML(header)
    study = StudyInfo.from_ismrmrd_header(xml)
    assert (study.patient_name, study.patient_id, study.patient_birth_date, study.patient_sex) == \
        ("Roe^Rick", "MRD-7", "19800506", "M")
    assert (study.study_date, study.study_time, study.study_id, study.accession_number, study.study_instance_uid) \
        == ("20240229", "083015", "ST9", "777", "1.2.3.4.5")
    volume = mr_volume(mr_parameters=header_mr_parameters(xml))
    paths = write_dicom_series(volume, tmp_path, "MR", study, mr_provenance())
    assert_valid(paths)
    ds = pydicom.dcmread(paths[0])
    assert float(ds.RepetitionTime) == 2500.0 and float(ds.EchoTime) == 12.5 and float(ds.FlipAngle) == 90.0
    assert float(ds.MagneticFieldStrength) == 3.0 and float(ds.ImagingFrequency) == pytest.approx(123.2)
    assert ds.MRAcquisitionType == "2D" and ds.PatientPosition == "HFS" and ds.ProtocolName == "t2_tse_ax"
    assert ds.SequenceName == "TurboSpinEcho" and ds.PatientName == "Roe^Rick" and ds.StudyID == "ST9"
    purposes = [item.PurposeOfReferenceCodeSequence[0].CodeValue for item in ds.ContributingEquipmentSequence]
    assert purposes == ["109101", "109102"]
    scanner = ds.ContributingEquipmentSequence[0]
    assert scanner.Manufacturer == "ACME Imaging" and scanner.ManufacturerModelName == "Research 3T"


def test_reconstruct_carries_the_header_mr_values_into_the_volume(tmp_path):
    from pipelines.pipeline import reconstruct

    rng = np.random.default_rng(0)
    kspace = (rng.standard_normal((2, 2, 32, 24)) + 1j * rng.standard_normal((2, 2, 32, 24))).astype(np.complex64)
    xml = make_ismrmrd_header((32, 24), (32, 24), (220.0, 165.0, 4.0), num_coils=2, field_strength_t=1.5)
    acq = MRIAcquisition(kspace=kspace, header_xml=xml, affine=oblique_affine())
    volume = reconstruct(acq, "zero-filled").volume
    assert volume.attrs["mr_parameters"]["magnetic_field_strength_t"] == 1.5
    paths = write_dicom_series(volume, tmp_path, "MR", StudyInfo(), Provenance.from_volume(volume, "mri-zero-filled"))
    ds = pydicom.dcmread(paths[0])
    assert float(ds.MagneticFieldStrength) == 1.5 and float(ds.ImagingFrequency) == pytest.approx(63.87)
    assert ds.ManufacturerModelName == "mri-zero-filled" and "method zero-filled" in list(ds.SoftwareVersions)


# ---- geometry and values ------------------------------------------------------------------------------------

def test_mr_geometry_and_values_round_trip(tmp_path):
    volume = mr_volume()
    datasets = read_all(write_dicom_series(volume, tmp_path, "MR", StudyInfo(), mr_provenance()))
    pixels, affine = affine_from_files(datasets)
    assert np.allclose(affine, volume.affine, atol=1e-4)
    assert pixels.dtype == np.uint16 and int(pixels.max()) == 4095
    assert "RescaleSlope" not in datasets[0]  # the classic MR Image module has no rescale
    r = np.corrcoef(pixels.ravel().astype(np.float64), np.abs(volume.data).ravel())[0, 1]
    assert r > 0.999
    ratio = pixels.astype(np.float64) / np.maximum(np.abs(volume.data), 1e-9)
    assert np.allclose(ratio[np.abs(volume.data) > 10], 4095 / np.abs(volume.data).max(), rtol=1e-2)
    for ds in datasets:
        normal = np.cross(*np.reshape([float(v) for v in ds.ImageOrientationPatient], (2, 3)))
        assert float(ds.SliceLocation) == pytest.approx(np.dot([float(v) for v in ds.ImagePositionPatient], normal),
                                                        abs=1e-4)
        assert float(ds.SliceThickness) == pytest.approx(3.0) and float(ds.SpacingBetweenSlices) == pytest.approx(3.0)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([1.1, 0.9])
        center, width = float(ds.WindowCenter), float(ds.WindowWidth)
        assert 0 < center < 4095 and 0 < width <= 4095


def test_instance_numbers_follow_the_slice_normal_for_a_left_handed_affine(tmp_path):
    volume = mr_volume(oblique_affine(handedness=-1))
    datasets = read_all(write_dicom_series(volume, tmp_path, "MR", StudyInfo(), mr_provenance()))
    pixels, affine = affine_from_files(datasets)
    locations = [float(ds.SliceLocation) for ds in sorted(datasets, key=lambda d: int(d.InstanceNumber))]
    assert np.all(np.diff(locations) > 0)
    # instance order runs against the volume's k: same patient-space grid with k flipped
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, volume.data.shape[0] - 1
    assert np.allclose(affine, volume.affine @ flip, atol=1e-4)
    expected = np.abs(volume.data[::-1])
    assert np.corrcoef(pixels.ravel().astype(float), expected.ravel())[0, 1] > 0.999


@pytest.mark.parametrize("handedness", [1, -1])
def test_ct_reads_back_through_the_ct_reader(tmp_path, handedness):
    volume = ct_volume(oblique_affine(handedness))
    paths = write_dicom_series(volume, tmp_path, "CT", StudyInfo(), ct_provenance())
    back = read_dicom_ct(tmp_path)
    expected_data, expected_affine = volume.data, volume.affine
    if handedness < 0:  # the reader sorts along the normal too
        flip = np.eye(4)
        flip[2, 2], flip[2, 3] = -1.0, volume.data.shape[0] - 1
        expected_data, expected_affine = volume.data[::-1], volume.affine @ flip
    assert np.max(np.abs(back.data - expected_data)) <= 0.5
    assert np.allclose(back.affine, expected_affine, atol=1e-4)
    ds = pydicom.dcmread(paths[0])
    assert ds.RescaleType == "HU" and ds.ConvolutionKernel == "hann"
    assert [float(v) for v in ds.WindowCenter] == [40.0, 500.0]


def test_ct_attenuation_volume_is_stored_in_hounsfield_units(tmp_path):
    mu = np.full((2, 16, 16), MU_WATER, dtype=np.float32)
    mu[:, :4] = 0.0                  # air
    mu[:, 12:] = 2 * MU_WATER        # +1000 HU
    mu[1, 8, 8] = MU_WATER * 1.0404  # +40.4 HU
    volume = ImageVolume(mu, np.diag([0.5, 0.5, 2.0, 1.0]), {"units": "1/mm", "method": "fbp"})
    write_dicom_series(volume, tmp_path, "CT", StudyInfo(), ct_provenance())
    back = read_dicom_ct(tmp_path)
    assert np.max(np.abs(back.data - mu_to_hu(mu))) <= 0.5
    assert back.data[0, 0, 0] == -1000 and back.data[0, 6, 6] == 0 and back.data[0, 13, 0] == 1000
    assert back.data[1, 8, 8] == 40


def test_ct_beyond_int16_uses_a_rescale_slope(tmp_path):
    hu = np.linspace(-1000, 99000, 2 * 8 * 8).reshape(2, 8, 8)
    write_dicom_series(ImageVolume(hu, np.eye(4), {"units": "HU"}), tmp_path, "CT", StudyInfo(), ct_provenance())
    slope = float(pydicom.dcmread(next(tmp_path.iterdir())).RescaleSlope)
    assert slope > 1
    assert np.max(np.abs(read_dicom_ct(tmp_path).data - hu)) <= slope / 2 + 1e-3 * slope


def test_simulated_ct_reconstruction_end_to_end(tmp_path, single_thread):
    """A real FBP of a simulated sinogram (1/mm) written as CT reads back as its HU image on the same grid."""
    from pipelines.io.sinogram import read_sinogram
    from pipelines.pipeline import reconstruct
    from pipelines.simulate.ct import simulate_ct_dataset

    sino = simulate_ct_dataset(tmp_path / "sino", views=16, source="shepp-logan", size=24, slices=2)[0]
    acq = read_sinogram(sino)
    volume = reconstruct(acq, "fbp").volume
    paths = write_dicom_series(volume, tmp_path / "dicom", "CT", StudyInfo.from_mapping(STUDY),
                               Provenance.from_volume(volume, "ct-fbp"))
    assert_valid(paths)
    back = read_dicom_ct(tmp_path / "dicom")
    assert np.max(np.abs(back.data - mu_to_hu(volume.data))) <= 0.5
    assert np.allclose(back.affine, acq.affine, atol=1e-4)


# ---- study, UIDs, provenance ---------------------------------------------------------------------------------

def test_patient_and_study_come_from_a_source_dataset(tmp_path):
    source = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    study = StudyInfo.from_dataset(source)
    paths = write_dicom_series(mr_volume(), tmp_path, "MR", study, mr_provenance(), derived=True)
    datasets = read_all(paths)
    for ds in datasets:
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                        "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
            assert str(ds.get(keyword, "")) == str(source.get(keyword, "")), keyword
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.FrameOfReferenceUID != source.FrameOfReferenceUID
    assert str(source.PatientName) and source.StudyInstanceUID  # the check above compared real values
    assert_valid(paths)


def test_patient_and_study_come_from_a_mapping_and_uids_are_new(tmp_path):
    study = StudyInfo.from_mapping(STUDY)
    first = read_all(write_dicom_series(mr_volume(), tmp_path / "a", "MR", study, mr_provenance()))
    second = read_all(write_dicom_series(mr_volume(), tmp_path / "b", "MR", study, mr_provenance(),
                                         series_number=1001, series_description="second"))
    for ds in first + second:
        assert str(ds.PatientName) == "Doe^Jane" and ds.PatientID == "P-0042" and ds.PatientSex == "F"
        assert ds.PatientBirthDate == "19700102" and ds.StudyInstanceUID == STUDY["study_instance_uid"]
        assert ds.StudyDate == "20240315" and ds.StudyTime == "101500" and ds.AccessionNumber == "ACC123"
        assert ds.StudyDescription == "Brain MRI" and str(ds.ReferringPhysicianName) == "House^Gregory"
        assert ds.StudyID == "S1"
    sops = {ds.SOPInstanceUID for ds in first + second}
    assert len(sops) == 6 and all(UID(uid).is_valid for uid in sops)
    assert len({ds.SeriesInstanceUID for ds in first}) == 1 and len({ds.SeriesInstanceUID for ds in second}) == 1
    assert first[0].SeriesInstanceUID != second[0].SeriesInstanceUID
    assert first[0].FrameOfReferenceUID != second[0].FrameOfReferenceUID
    assert int(second[0].SeriesNumber) == 1001 and second[0].SeriesDescription == "second"
    shared = StudyInfo().with_uid()
    uids = {pydicom.dcmread(write_dicom_series(mr_volume(), tmp_path / d, "MR", shared, mr_provenance())[0])
            .StudyInstanceUID for d in ("c", "d")}
    assert uids == {shared.study_instance_uid}


def test_frame_of_reference_can_be_reused(tmp_path):
    frame = "1.2.826.0.1.3680043.8.498.999"
    datasets = read_all(write_dicom_series(ct_volume(), tmp_path, "CT", StudyInfo(), ct_provenance(),
                                           frame_of_reference_uid=frame))
    assert {ds.FrameOfReferenceUID for ds in datasets} == {frame}


def test_provenance_fields(tmp_path):
    ds = pydicom.dcmread(write_dicom_series(mr_volume(), tmp_path, "MR", StudyInfo(), mr_provenance(
        institution_name="Test Hospital"))[0])
    versions = list(ds.SoftwareVersions)
    assert versions[0].startswith("recon-service ")
    assert versions[1] == f"{MODEL} sha256:{SHA[:12]}" and versions[2] == PROVIDER
    assert ds.Manufacturer == "recon-service" and ds.ManufacturerModelName == "mri-recurrentvarnet"
    assert ds.InstitutionName == "Test Hospital"
    (item,) = ds.ContributingEquipmentSequence
    code = item.PurposeOfReferenceCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("109102", "DCM",
                                                                             "Processing Equipment")
    assert item.Manufacturer == "recon-service" and list(item.SoftwareVersions) == versions
    assert len(item.ContributionDateTime) >= 14
    for text in (item.ContributionDescription, ds.DerivationDescription):
        for word in ("recurrentvarnet", MODEL, SHA, PROVIDER, "fft=matmul"):
            assert word in text, (word, text)


def test_long_provenance_values_are_shortened_to_their_vr(tmp_path):
    provenance = Provenance(method="rim", pipeline="p" * 80, model_id="m" * 80, weights_sha256=SHA,
                            engine_provider="e" * 80, parameters={"x": "y" * 2000})
    paths = write_dicom_series(mr_volume(), tmp_path, "MR", StudyInfo.from_mapping(STUDY), provenance)
    ds = pydicom.dcmread(paths[0])
    assert all(len(v) <= 64 for v in ds.SoftwareVersions) and len(ds.ManufacturerModelName) <= 64
    assert ds.SoftwareVersions[1].endswith(f"sha256:{SHA[:12]}")
    assert len(ds.DerivationDescription) <= 1024
    assert_valid(paths[:1])


def test_provenance_from_volume_attrs():
    volume = ImageVolume(np.ones((1, 4, 4), np.float32), attrs={
        "method": "rim", "model_id": "rim-brain-sim", "weights_sha256": SHA, "engine": PROVIDER,
        "params": {"engine": "onnx"}})
    p = Provenance.from_volume(volume, "mri-rim")
    assert (p.method, p.pipeline, p.model_id, p.weights_sha256, p.engine_provider, p.parameters) == \
        ("rim", "mri-rim", "rim-brain-sim", SHA, PROVIDER, {"engine": "onnx"})
    with pytest.raises(ValueError, match="method"):
        Provenance.from_volume(ImageVolume(np.ones((1, 4, 4), np.float32)))


def test_zip_series_holds_every_file(tmp_path):
    paths = write_dicom_series(ct_volume(), tmp_path / "s", "CT", StudyInfo(), ct_provenance())
    archive = zip_series(paths, tmp_path / "out" / "series.zip")
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == sorted(p.name for p in paths)
        for path in paths:
            assert zf.read(path.name) == path.read_bytes()
    with pytest.raises(ValueError, match="unique"):
        zip_series([paths[0], paths[0]], tmp_path / "dup.zip")
    with pytest.raises(ValueError, match="no files"):
        zip_series([], tmp_path / "empty.zip")


# ---- bad input -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("patient_birth_date", "1970-01-02"), ("patient_birth_date", "19700230"), ("study_date", "2024031"),
    ("study_time", "251500"), ("study_time", "10:15"), ("patient_sex", "X"), ("study_instance_uid", "1.2.03.4"),
    ("study_instance_uid", "1." + "2" * 70), ("study_instance_uid", "abc"), ("patient_id", 42),
    ("accession_number", "A" * 17), ("study_id", "S" * 17), ("patient_name", "N" * 65), ("patient_id", "a\\b"),
    ("study_description", "line\nbreak"),
])
def test_bad_study_mapping_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        StudyInfo.from_mapping({**STUDY, field: value})


def test_unknown_study_key_is_refused():
    with pytest.raises(ValueError, match="patient_weight"):
        StudyInfo.from_mapping({"patient_weight": "70"})
    with pytest.raises(ValueError, match="mapping"):
        StudyInfo.from_mapping(["patient_id"])
    assert StudyInfo.from_mapping({"patient_sex": "", "study_id": None}) == StudyInfo()


@pytest.mark.parametrize("make, modality, words", [
    (lambda: ImageVolume(np.ones((4, 4), np.float32), attrs={"units": "HU"}), "CT", "(z, y, x)"),
    (lambda: ImageVolume(np.ones((0, 4, 4), np.float32), attrs={"units": "HU"}), "CT", "empty"),
    (lambda: ImageVolume(np.full((1, 4, 4), np.nan, np.float32)), "MR", "non-finite"),
    (lambda: ImageVolume(np.full((1, 4, 4), np.inf, np.float32)), "MR", "non-finite"),
    (lambda: ImageVolume(np.ones((1, 4, 4), np.float32)), "PT", "modality"),
    (lambda: ImageVolume(np.ones((1, 4, 4), np.float32)), "CT", "units"),
    (lambda: ImageVolume(np.ones((1, 4, 4), np.complex64), attrs={"units": "HU"}), "CT", "complex"),
    (lambda: ImageVolume(np.ones((2, 4, 4), np.float32), np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0],
                                                                    [0, 0, 0, 1.0]])), "MR", "orthogonal"),
    (lambda: ImageVolume(np.ones((2, 4, 4), np.float32), np.diag([1.0, 1.0, 0.0, 1.0])), "MR", "coincide"),
    (lambda: ImageVolume(np.ones((2, 4, 4), np.float32), np.full((4, 4), np.nan)), "MR", "affine"),
])
def test_bad_volumes_are_refused(tmp_path, make, modality, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        write_dicom_series(make(), tmp_path, modality, StudyInfo(), ct_provenance())
    assert not list(tmp_path.iterdir())


def test_existing_files_are_not_overwritten(tmp_path):
    write_dicom_series(ct_volume(), tmp_path, "CT", StudyInfo(), ct_provenance())
    with pytest.raises(FileExistsError):
        write_dicom_series(ct_volume(), tmp_path, "CT", StudyInfo(), ct_provenance())
