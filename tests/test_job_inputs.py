"""Content checks of submitted files: kinds from content (not names), one raw file per job, DICOM study."""

import shutil

import h5py
import pytest
from api_server import copy_dicom, write_fastmri_file, write_sinogram_file, write_unknown_hdf5
from job_inputs import write_ismrmrd

from pipelines.data import InputError
from pipelines.io.detect import FORMATS, RAW_LAYOUTS, format_label, formats_for
from pipelines.io.dicom_study import read_study_keywords
from recon_service.jobs.catalog import get_pipeline
from recon_service.jobs.inputs import RejectedInput, check_submission, detect_kind
from recon_service.storage import UploadArea


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inputs")
    text = tmp / "notes.h5"
    text.write_text("not hdf5")
    return {"fastmri": write_fastmri_file(tmp / "a.bin"), "ismrmrd": write_ismrmrd(tmp / "raw.dat"),
            "sinogram": write_sinogram_file(tmp / "s.h5"), "dicom": copy_dicom(tmp / "x.h5"),
            "unknown": write_unknown_hdf5(tmp / "u.h5"), "text": text}


def test_kinds_come_from_content_not_names(files):
    for kind in ("fastmri", "ismrmrd", "sinogram", "dicom"):
        assert detect_kind(files[kind]) == kind
    with pytest.raises(InputError, match="not a known raw-data layout.*images"):
        detect_kind(files["unknown"])
    with pytest.raises(RejectedInput, match="neither an HDF5") as err:
        detect_kind(files["text"])
    assert err.value.unsupported


def test_dicom_study_attributes(files):
    study = read_study_keywords(files["dicom"])
    assert study["StudyInstanceUID"].startswith("1.3.6.1.4.1.5962") and study["PatientID"] == "4MR1"
    assert "PatientBirthDate" not in study  # empty values are left out


def test_unreadable_dicom_names_the_file(files):
    with pytest.raises(InputError, match="not a readable DICOM file") as err:
        read_study_keywords(files["text"])
    assert err.value.source == str(files["text"])


def test_one_list_of_input_formats():
    assert formats_for("mri") == ("fastmri", "ismrmrd") and formats_for("ct") == ("sinogram",)
    assert formats_for(None) == ("dicom",)
    assert RAW_LAYOUTS == ("fastmri", "ismrmrd", "sinogram")
    assert format_label("fastmri") == "fastMRI k-space (HDF5)" and format_label("dicom") == "DICOM"
    assert {f.kind for f in FORMATS} == {*RAW_LAYOUTS, "dicom"}
    with pytest.raises(ValueError, match="unknown modality 'pet'"):
        formats_for("pet")
    with pytest.raises(ValueError, match="unknown input format 'nifti'"):
        format_label("nifti")


def _stored(tmp_path, *paths):
    area = UploadArea(tmp_path, "job", 10**9)
    for path in paths:
        writer = area.open(path.name)
        writer.write(path.read_bytes())
        area.add(writer.finish())
    return area.files


def test_check_submission(tmp_path, files):
    mri = get_pipeline("mri-cg-sense")
    checked = check_submission(mri, _stored(tmp_path, files["dicom"], files["ismrmrd"]), {"StudyID": "S1"})
    assert [i.kind for i in checked.inputs] == ["dicom", "ismrmrd"] and checked.raw_kind == "ismrmrd"
    assert [i.path for i in checked.inputs] == ["uploads/job/0-x.h5", "uploads/job/1-raw.dat"]
    assert checked.study["StudyID"] == "S1" and checked.study["PatientID"] == "4MR1"


def test_check_submission_refusals(tmp_path, files):
    mri, ct = get_pipeline("mri-zero-filled"), get_pipeline("ct-fbp")
    cases = [
        (mri, [], "no file parts"),
        (mri, [files["dicom"]], "no raw-data file"),
        (ct, [files["fastmri"]], "file part 1 ('a.bin') is fastMRI k-space (HDF5), but pipeline 'ct-fbp'"),
        (mri, [files["fastmri"], files["ismrmrd"]], "2 raw-data files"),
        (mri, [files["unknown"]], "file part 1 ('u.h5'): not a known raw-data layout"),
    ]
    for n, (pipeline, paths, message) in enumerate(cases):
        with pytest.raises(RejectedInput) as err:
            check_submission(pipeline, _stored(tmp_path / str(n), *paths))
        assert message in str(err.value)
    broken = tmp_path / "broken.h5"
    shutil.copyfile(files["sinogram"], broken)
    with h5py.File(broken, "a") as f:
        del f["angles"]
    with pytest.raises(RejectedInput, match="file part 1 .*missing dataset 'angles'"):
        check_submission(ct, _stored(tmp_path / "b", broken))
    with pytest.raises(RejectedInput, match="not a DICOM UID"):
        check_submission(ct, _stored(tmp_path / "c", files["sinogram"]), {"StudyInstanceUID": "1.02"})
