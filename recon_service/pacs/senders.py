"""Sending DICOM instances to one destination: STOW-RS (dicomweb-client) or C-STORE (pynetdicom).

A sender sends a list of instances in order and reports after each batch, so the outbox can record how far it
got and renew its lease. Failures are :class:`DeliveryError`; ``permanent`` ones (the peer understood and refused
the data) are not retried, every other one (peer down, timeout, association refused, 5xx) is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pydicom import Dataset

from recon_service.pacs.config import DicomWebDestination, DimseDestination

SentFn = Callable[[int], None]  # number of instances sent so far


class DeliveryError(Exception):
    """Sending failed; ``permanent`` when retrying the same data cannot succeed."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class _Throttle:
    """Keeps to at most ``rate`` instances per second (None: no limit)."""

    def __init__(self, rate: float | None):
        self.interval = 0.0 if rate is None else 1.0 / rate
        self.next = time.monotonic()

    def wait(self, count: int = 1) -> None:
        if self.interval <= 0:
            return
        now = time.monotonic()
        if self.next > now:
            time.sleep(self.next - now)
        self.next = max(self.next, now) + self.interval * count


def dicomweb_session(destination: DicomWebDestination):  # noqa: ANN201 - requests.Session
    import requests

    class TimedSession(requests.Session):
        """requests has no session-wide timeout: every request of this session gets the destination's."""

        def request(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            kwargs.setdefault("timeout", destination.timeout_s)
            return super().request(*args, **kwargs)

    session = TimedSession()
    auth = destination.auth()
    if isinstance(auth, tuple):
        session.auth = auth
    elif isinstance(auth, str):
        session.headers["Authorization"] = f"Bearer {auth}"
    return session


def dicomweb_client(destination: DicomWebDestination):  # noqa: ANN201 - dicomweb_client.DICOMwebClient
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(destination.url, session=dicomweb_session(destination))


def send_stow(destination: DicomWebDestination, instances: Sequence[Dataset], sent: SentFn) -> None:
    """STOW-RS the instances in batches of ``destination.batch``."""
    import requests

    client = dicomweb_client(destination)
    client.set_http_retry_params(retry=False)
    throttle = _Throttle(destination.max_instances_per_s)
    done = 0
    for start in range(0, len(instances), destination.batch):
        batch = list(instances[start:start + destination.batch])
        throttle.wait(len(batch))
        try:
            response = client.store_instances(batch)
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else 0
            # 4xx other than timeouts, rate limits and auth (which an operator can fix): the data itself is refused
            permanent = 400 <= status < 500 and status not in (401, 403, 404, 408, 409, 429)
            raise DeliveryError(f"STOW-RS to {destination.url}: HTTP {status}", permanent) from err
        except requests.RequestException as err:
            raise DeliveryError(f"STOW-RS to {destination.url}: {type(err).__name__}: {_first_line(err)}") from err
        failed = _stow_failures(response)
        if failed:
            raise DeliveryError(f"STOW-RS to {destination.url}: {failed} instance(s) refused", permanent=True)
        done += len(batch)
        sent(done)


def _stow_failures(response: Dataset | None) -> int:
    """Instances the STOW-RS response lists as failed (FailedSOPSequence, 0008,1198)."""
    if response is None:
        return 0
    return len(response.get("FailedSOPSequence", []) or [])


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [""])[0][:300]


def associate(destination: DimseDestination, what: str, contexts: list[tuple[str, list[str] | None]]):  # noqa: ANN201
    """An established pynetdicom association with ``destination`` proposing ``contexts`` (SOP class, transfer
    syntaxes or None for the defaults), and the words naming it (``"C-STORE to AE@host:port"``);
    :class:`DeliveryError` when the peer cannot be reached or refuses."""
    from pynetdicom import AE

    ae = AE(ae_title=destination.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = destination.timeout_s
    for sop_class, syntaxes in contexts:
        if syntaxes:
            ae.add_requested_context(sop_class, syntaxes)
        else:
            ae.add_requested_context(sop_class)
    where = f"{what} {destination.called_ae}@{destination.host}:{destination.port}"
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.called_ae)
    if not assoc.is_established:
        # pynetdicom reports a peer it cannot reach as an aborted association: only a rejection is the peer's answer
        reason = "association rejected (check the AE titles)" if assoc.is_rejected else \
            "no association (peer unreachable)"
        raise DeliveryError(f"{where}: {reason}")
    return assoc, where


def send_cstore(destination: DimseDestination, instances: Sequence[Dataset], sent: SentFn) -> None:
    """C-STORE the instances over one association, proposing each SOP class with the files' transfer syntax."""
    contexts = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in instances})
    assoc, where = associate(destination, "C-STORE to", [(sop_class, [syntax]) for sop_class, syntax in contexts])
    throttle = _Throttle(destination.max_instances_per_s)
    try:
        for done, ds in enumerate(instances, start=1):
            throttle.wait()
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise DeliveryError(f"{where}: no response (connection lost or timed out)")
            if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:  # success or warning
                # out of resources (0xA7xx) and processing failure (0x0110) may pass on a later try; the rest
                # (0x0122 SOP class not supported, 0xA9xx not matching the class, 0xCxxx cannot understand) won't
                permanent = not (0xA700 <= code <= 0xA7FF or code == 0x0110)
                raise DeliveryError(f"{where}: instance {done} refused with status 0x{code:04X}", permanent)
            sent(done)
    finally:
        if assoc.is_established:
            assoc.release()


def send(destination: DicomWebDestination | DimseDestination, instances: Sequence[Dataset], sent: SentFn) -> None:
    """Send ``instances`` to ``destination`` by its kind; raises :class:`DeliveryError`."""
    if isinstance(destination, DicomWebDestination):
        send_stow(destination, instances, sent)
    else:
        send_cstore(destination, instances, sent)


def probe(destination: DicomWebDestination | DimseDestination) -> str:
    """Check that a destination answers: a C-ECHO over DIMSE, a QIDO-RS study search (limit 1) over DICOMweb.
    Returns what answered; raises :class:`DeliveryError` saying what did not."""
    if isinstance(destination, DicomWebDestination):
        import requests

        try:
            response = dicomweb_session(destination).get(destination.url.rstrip("/") + "/studies",
                                                         params={"limit": "1"},
                                                         headers={"Accept": "application/dicom+json"})
        except requests.RequestException as err:
            raise DeliveryError(f"QIDO-RS at {destination.url}: {type(err).__name__}: {_first_line(err)}") from err
        if response.status_code not in (200, 204):
            raise DeliveryError(f"QIDO-RS at {destination.url}: HTTP {response.status_code}")
        return f"QIDO-RS answered HTTP {response.status_code}"
    assoc, where = associate(destination, "C-ECHO to", [("1.2.840.10008.1.1", None)])  # Verification
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code != 0x0000:
        raise DeliveryError(f"{where}: " + ("no response" if code is None else f"status 0x{code:04X}"))
    return "C-ECHO succeeded"
