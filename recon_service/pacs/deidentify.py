"""De-identification on export for research destinations: a subset of the DICOM PS3.15 Basic Application
Confidentiality Profile (E.1-1) with consistent UID remapping.

What it does to a dataset (sequences included, recursively):
- **Z** (replace by an empty value; type 2 stays present): patient name, birth date and sex, study date and
  time, accession number, study ID, referring physician. PatientID becomes a pseudonym (the same patient gets
  the same one), so a research set keeps its subjects apart.
- **X** (remove): the other identifying attributes of table E.1-1 that a reconstruction can carry (addresses,
  institution, operators, device serials, other patient IDs, comments, dates other than the study's, ...), and
  every private element.
- **U** (replace UIDs): every UID that is not a registered DICOM UID (SOP classes, transfer syntaxes and coding
  schemes stay) is replaced by ``2.25.<128 bits of HMAC-SHA256(secret, uid)>``: the same input UID always maps
  to the same new UID for one secret, so instances of one study stay one study, a series sent twice is the same
  series twice, and nobody without the secret can map back.
- PatientIdentityRemoved = YES, with DeidentificationMethod and the code of the Basic Profile (DCM 113100).
"""

from __future__ import annotations

import copy
import hashlib
import hmac

from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, UID_dictionary

EMPTY = ("PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
         "ReferringPhysicianName", "ContentCreatorName")
REMOVE = ("PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName", "OtherPatientIDs",
          "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName", "PatientBirthTime", "PatientAge",
          "PatientSize", "PatientWeight", "MilitaryRank", "BranchOfService", "MedicalRecordLocator",
          "EthnicGroup", "Occupation", "AdditionalPatientHistory", "PatientComments", "PatientReligiousPreference",
          "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
          "OperatorsName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
          "PhysiciansOfRecord", "RequestingPhysician", "ReferringPhysicianAddress",
          "ReferringPhysicianTelephoneNumbers", "DeviceSerialNumber", "PlateID", "GantryID", "DetectorID",
          "StudyComments", "ImageComments", "RequestAttributesSequence", "ReferencedPatientSequence",
          "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence", "AdmittingDiagnosesDescription",
          "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime", "ContentDate",
          "ContentTime", "InstanceCreationDate", "InstanceCreationTime", "PerformedProcedureStepStartDate",
          "PerformedProcedureStepStartTime", "PerformedProcedureStepID", "ProtocolName", "DateOfLastCalibration",
          "TimeOfLastCalibration", "IssuerOfPatientID", "InstitutionCodeSequence", "ProcedureCodeSequence")
BASIC_PROFILE = ("113100", "DCM", "Basic Application Confidentiality Profile")
METHOD = "recon-service Basic Profile subset, HMAC UIDs"


def remap_uid(uid: str, secret: bytes) -> str:
    """The new UID of ``uid``: ``2.25.`` and 128 bits of HMAC-SHA256 as a decimal number (at most 44 characters)."""
    digest = hmac.new(secret, uid.encode("ascii"), hashlib.sha256).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


def pseudonym(value: str, secret: bytes) -> str:
    """A stable 16-character pseudonym of an identifier (a LO value)."""
    return "ANON" + hmac.new(secret, b"id:" + value.encode("utf-8"), hashlib.sha256).hexdigest()[:12].upper()


def _registered(uid: str) -> bool:
    return uid in UID_dictionary


def _clean(ds: Dataset, secret: bytes) -> None:
    for element in list(ds):
        if element.tag.is_private:
            del ds[element.tag]
            continue
        keyword = element.keyword
        if keyword in REMOVE:
            del ds[element.tag]
        elif keyword in EMPTY:
            element.value = ""
        elif keyword == "PatientID":
            element.value = pseudonym(str(element.value), secret) if element.value else ""
        elif element.VR == "UI" and element.value:
            values = element.value if element.VM > 1 else [element.value]
            new = [str(v) if _registered(str(v)) else remap_uid(str(v), secret) for v in values]
            element.value = new if element.VM > 1 else new[0]
        elif element.VR == "SQ":
            for item in element.value:
                _clean(item, secret)


def deidentify(ds: Dataset, secret: bytes) -> Dataset:
    """A de-identified copy of ``ds`` (the file meta follows the new SOP instance UID); ``ds`` is unchanged."""
    out = copy.deepcopy(ds)
    _clean(out, secret)
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE
    out.DeidentificationMethodCodeSequence = Sequence([code])
    if getattr(out, "file_meta", None) is not None and "SOPInstanceUID" in out:
        out.file_meta.MediaStorageSOPInstanceUID = UID(out.SOPInstanceUID)
    return out
