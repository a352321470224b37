"""De-identification on export: no identifying attribute of the result series survives, UIDs are remapped
consistently (one study stays one study, a resend gives the same UIDs), registered UIDs stay."""

import pydicom
from pacs_fixtures import STUDY, job_result

from recon_service.jobs.results import result_dicom_files, results_dir
from recon_service.pacs.deidentify import EMPTY, REMOVE, deidentify, remap_uid

SECRET = b"k" * 32


def walk(ds):
    for element in ds:
        yield element
        if element.VR == "SQ":
            for item in element.value:
                yield from walk(item)


def test_no_identifying_attribute_survives(tmp_path):
    job_result(tmp_path, "job1", slices=3, uncertainty=True)
    paths = result_dicom_files(tmp_path, "job1")
    assert len(paths) == 6
    originals = [pydicom.dcmread(p) for p in paths]
    # the source carries the identity, so the test would see it if it survived
    assert str(originals[0].PatientName) == "Doe^Jane" and originals[0].AccessionNumber == "ACC-77"
    cleaned = [deidentify(ds, SECRET) for ds in originals]
    original_uids = {str(e.value) for ds in originals for e in walk(ds) if e.VR == "UI"} - {
        str(ds.SOPClassUID) for ds in originals}
    # every identifying value (the description is not one; the one-letter sex is checked as an element above)
    identity = [v for v in STUDY.values() if v != "Brain MRI" and len(v) > 1]
    for ds, before in zip(cleaned, originals, strict=True):
        for element in walk(ds):
            assert not element.tag.is_private
            assert element.keyword not in REMOVE, element.keyword
            if element.keyword in EMPTY:
                assert element.value in ("", None), element.keyword
            if element.VR == "UI":
                assert str(element.value) not in original_uids, element.keyword
        text = repr(ds)
        for value in identity:
            assert value not in text, value
        assert ds.PatientID.startswith("ANON") and ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert ds.SOPClassUID == before.SOPClassUID  # registered UIDs stay
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.StudyInstanceUID == remap_uid(before.StudyInstanceUID, SECRET)
        assert before.PatientName == "Doe^Jane"  # the stored original is untouched
    # one study, one frame of reference, two series, six instances: the structure survives the remapping
    assert len({ds.StudyInstanceUID for ds in cleaned}) == 1
    assert len({ds.FrameOfReferenceUID for ds in cleaned}) == 1
    assert len({ds.SeriesInstanceUID for ds in cleaned}) == 2
    assert len({ds.SOPInstanceUID for ds in cleaned}) == 6
    assert len({ds.PatientID for ds in cleaned}) == 1
    # the same secret gives the same UIDs (a resend is the same series); another secret gives others
    assert deidentify(originals[0], SECRET).SOPInstanceUID == cleaned[0].SOPInstanceUID
    assert deidentify(originals[0], b"x" * 32).SOPInstanceUID != cleaned[0].SOPInstanceUID
    assert len(cleaned[0].SOPInstanceUID) <= 64
    assert (results_dir(tmp_path, "job1") / "dicom").is_dir()
