"""Study lookup in a PACS, for inputs that carry no DICOM identity (fastMRI and ISMRMRD files): find the study by
StudyInstanceUID or AccessionNumber with QIDO-RS or C-FIND and take its patient and study attributes, so the
reconstruction joins the patient's study.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydicom import Dataset

from pipelines.io.dicom_study import DICOM_KEYWORDS, dataset_identity
from recon_service.pacs.config import DicomWebDestination, DimseDestination

KEYS = ("StudyInstanceUID", "AccessionNumber")


class StudyNotFound(LookupError):
    """No study, or more than one, matches the key."""


class LookupUnavailable(Exception):
    """The PACS could not be asked (down, refused, timed out)."""


def lookup_key(request: Mapping[str, Any]) -> tuple[str, str]:
    """The one ``(keyword, value)`` of a lookup request ``{"StudyInstanceUID": ...}`` or ``{"AccessionNumber": ...}``
    (a ``source`` key aside); ValueError naming the problem otherwise."""
    keys = {k: v for k, v in request.items() if k != "source"}
    unknown = sorted(set(keys) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown lookup key(s) {', '.join(map(str, unknown))}; use one of {', '.join(KEYS)}")
    if len(keys) != 1:
        raise ValueError(f"give exactly one of {', '.join(KEYS)}")
    (keyword, value), = keys.items()
    if not isinstance(value, str) or not value.strip() or len(value) > 64 or "*" in value or "?" in value:
        raise ValueError(f"{keyword} must be a non-empty exact value (no wildcards, at most 64 characters)")
    return keyword, value.strip()


def lookup_study(destination: DicomWebDestination | DimseDestination, keyword: str, value: str) -> dict[str, str]:
    """The patient and study attributes (DICOM keywords) of the one study where ``keyword`` equals ``value``.

    Raises :class:`StudyNotFound` for none or several, :class:`LookupUnavailable` when the PACS cannot be asked."""
    if keyword not in KEYS:
        raise ValueError(f"lookup by {keyword!r} is not supported; use one of {', '.join(KEYS)}")
    if isinstance(destination, DicomWebDestination):
        found = _qido(destination, keyword, value)
    else:
        found = _cfind(destination, keyword, value)
    matches = [ds for ds in found if str(ds.get(keyword, "")) == value]
    if not matches:
        raise StudyNotFound(f"no study with {keyword} {value!r}")
    uids = {str(ds.get("StudyInstanceUID", "")) for ds in matches}
    if len(uids) > 1:
        raise StudyNotFound(f"{len(uids)} studies have {keyword} {value!r}; look it up by StudyInstanceUID")
    return dataset_identity(matches[0])


def _qido(destination: DicomWebDestination, keyword: str, value: str) -> list[Dataset]:
    import requests

    from recon_service.pacs.senders import dicomweb_client

    client = dicomweb_client(destination)
    client.set_http_retry_params(retry=False)
    try:
        found = client.search_for_studies(search_filters={keyword: value}, fields=list(DICOM_KEYWORDS.values()))
    except requests.RequestException as err:
        raise LookupUnavailable(f"QIDO-RS at {destination.url}: {type(err).__name__}") from err
    return [Dataset.from_json(item) for item in found]


def _cfind(destination: DimseDestination, keyword: str, value: str) -> list[Dataset]:
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    from recon_service.pacs.senders import DeliveryError, associate

    try:
        assoc, where = associate(destination, "C-FIND at", [(StudyRootQueryRetrieveInformationModelFind, None)])
    except DeliveryError as err:
        raise LookupUnavailable(str(err)) from err
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    for key in DICOM_KEYWORDS.values():
        setattr(query, key, "")
    setattr(query, keyword, value)
    found = []
    try:
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            code = getattr(status, "Status", None)
            if code is None:
                raise LookupUnavailable(f"{where}: no response")
            if code in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
            elif code != 0x0000 and code not in (0xFF00, 0xFF01):
                raise LookupUnavailable(f"{where}: status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return found
