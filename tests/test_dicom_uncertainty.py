"""A volume's uncertainty map as its own DICOM series: valid files, same study and frame of reference as the image
series, its own series UID and number, values on the image series' scale (MR) or in HU (CT)."""

import io
import zipfile

import numpy as np
import pydicom
import pytest
from dicom_checks import assert_no_errors, assert_valid
from test_dicom_series import STUDY, ct_volume, mr_provenance, mr_volume

from pipelines.ct_units import MU_WATER
from pipelines.io.dicom_series import Provenance
from pipelines.io.dicom_study import StudyInfo
from pipelines.io.dicom_uncertainty import uncertainty_description, write_uncertainty_series
from recon_service.jobs.results import DicomSeries, write_results


def _with_std(volume, std):
    volume.uncertainty = np.asarray(std, np.float32)
    return volume


def _series(data_dir, relative) -> list[pydicom.Dataset]:
    with zipfile.ZipFile(data_dir / relative) as archive:
        return [pydicom.dcmread(io.BytesIO(archive.read(n))) for n in sorted(archive.namelist())]


@pytest.mark.parametrize("study", [StudyInfo.from_mapping(STUDY), StudyInfo()], ids=["given study", "new study"])
def test_job_results_hold_the_map_as_a_second_series_of_the_same_study(tmp_path, study):
    volume = mr_volume()
    magnitude = np.abs(volume.data)
    _with_std(volume, 0.05 * magnitude + 1.0)
    volume.attrs["uncertainty_what"] = "standard deviation over 4 A-DPS draws"
    files = write_results(tmp_path, "job1", volume, dicom=DicomSeries("mri", study, mr_provenance(),
                                                                      "mri-adps reconstruction"))
    assert {"dicom", "uncertainty", "uncertainty-dicom"} <= set(files)
    images, maps = _series(tmp_path, files["dicom"]), _series(tmp_path, files["uncertainty-dicom"])
    assert len(images) == len(maps) == 3
    image, unc = images[0], maps[0]
    assert image.StudyInstanceUID == unc.StudyInstanceUID and image.StudyDate == unc.StudyDate
    assert image.FrameOfReferenceUID == unc.FrameOfReferenceUID
    assert image.SeriesInstanceUID != unc.SeriesInstanceUID
    assert (int(image.SeriesNumber), int(unc.SeriesNumber)) == (1000, 1001)
    assert unc.SeriesDescription == "Uncertainty map (standard deviation) of mri-recurrentvarnet"
    assert list(unc.ImageType) == ["DERIVED", "PRIMARY", "OTHER"]
    assert "standard deviation over 4 A-DPS draws" in unc.DerivationDescription
    assert "image series' scale" in unc.ImageComments
    # the map is stored on the image series' scale: std / |image| = stored std / stored image
    by_number = {int(ds.InstanceNumber): ds.pixel_array.astype(float) for ds in maps}
    stored_images = {int(ds.InstanceNumber): ds.pixel_array.astype(float) for ds in images}
    ratio = by_number[1].max() / stored_images[1].max()
    expected = float(volume.uncertainty[0].max() / magnitude[0].max())
    assert ratio == pytest.approx(expected, rel=0.01)
    assert image.SOPInstanceUID != unc.SOPInstanceUID and unc.Modality == "MR"
    # a new study has no patient or study ID: dciodvfy warns that a DICOMDIR needs them (as for the images)
    check = assert_valid if study.patient_id else assert_no_errors
    check(sorted((tmp_path / "results" / "job1" / "dicom-uncertainty").glob("*.dcm"))[:1])


def test_a_volume_without_a_map_writes_no_uncertainty_series(tmp_path):
    files = write_results(tmp_path, "job2", mr_volume(), dicom=DicomSeries("mri", StudyInfo(), mr_provenance()))
    assert "uncertainty-dicom" not in files and "uncertainty" not in files
    assert not (tmp_path / "results" / "job2" / "dicom-uncertainty").exists()


def test_ct_map_is_stored_as_a_spread_in_hounsfield_units(tmp_path):
    volume = ct_volume()
    volume.data = (MU_WATER * (1 + volume.data / 1000)).astype(np.float32)
    volume.attrs["units"] = "1/mm"
    std_mu = np.full(volume.data.shape, 0.0005, np.float32)  # 0.0005 / mm is 1000 * 0.0005 / MU_WATER HU
    _with_std(volume, std_mu)
    provenance = Provenance(method="dds", pipeline="ct-dds", model_id="ct-prior-brain-sim")
    paths = write_uncertainty_series(volume, tmp_path, "CT", StudyInfo.from_mapping(STUDY), provenance,
                                     uncertainty_description("ct-dds"))
    ds = pydicom.dcmread(paths[0])
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.allclose(hu, round(1000 * 0.0005 / MU_WATER), atol=0.5)
    assert ds.SeriesDescription == "Uncertainty map (standard deviation) of ct-dds" and ds.Modality == "CT"
    assert "in HU" in ds.ImageComments
    assert_valid(paths[:1])


def test_bad_maps_are_refused(tmp_path):
    study, provenance = StudyInfo(), mr_provenance()
    with pytest.raises(ValueError, match="has no uncertainty map"):
        write_uncertainty_series(mr_volume(), tmp_path, "MR", study, provenance, "x")
    with pytest.raises(ValueError, match="shape"):
        write_uncertainty_series(_with_std(mr_volume(), np.ones((2, 32, 24))), tmp_path, "MR", study, provenance, "x")
    with pytest.raises(ValueError, match="finite and non-negative"):
        write_uncertainty_series(_with_std(mr_volume(), -np.ones((3, 32, 24))), tmp_path, "MR", study, provenance,
                                 "x")
