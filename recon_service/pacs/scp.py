"""The C-STORE SCP: a pynetdicom storage server handing every instance to the inbox (``recon_service.pacs.inbox``).

It listens on ``inbound.host:inbound.port`` (loopback by default) as ``inbound.ae_title``, accepts associations
only from ``inbound.allowed_callers`` (a refused caller is audited), proposes CT and MR Image Storage plus the SOP
classes the rules name (other classes are not accepted at association) and Verification (C-ECHO).
"""

from __future__ import annotations

import logging

from pydicom.uid import UID

from recon_service.pacs.config import Inbound
from recon_service.pacs.inbox import Inbox

LOG = logging.getLogger(__name__)
STORAGE_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4")  # CT, MR Image Storage
VERIFICATION = "1.2.840.10008.1.1"


class StorageSCP:
    def __init__(self, inbox: Inbox, inbound: Inbound):
        self.inbox, self.inbound = inbox, inbound
        self.server = None

    def _ae(self):  # noqa: ANN202 - pynetdicom.AE
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES

        ae = AE(ae_title=self.inbound.ae_title)
        ae.require_calling_aet = list(self.inbound.allowed_callers) or ["\x00refuse-all"]
        classes = {*STORAGE_CLASSES, *(r.match.sop_class for r in self.inbound.rules if r.match.sop_class)}
        for sop_class in sorted(classes):
            ae.add_supported_context(UID(sop_class), ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        ae.maximum_associations = 8
        return ae

    def _on_store(self, event) -> int:  # noqa: ANN001 - pynetdicom event
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
        except Exception as err:  # noqa: BLE001 - undecodable data set
            LOG.info("C-STORE: cannot decode the data set (%s)", type(err).__name__)
            return 0xC000
        caller = event.assoc.requestor.ae_title.strip()
        return self.inbox.receive(ds, "dimse", caller)

    def _on_rejected(self, event) -> None:  # noqa: ANN001
        caller = event.assoc.requestor.ae_title.strip()
        address = event.assoc.requestor.address
        self.inbox.audit.record(f"dimse:{caller}"[:128], "dicom.associate", "forbidden", None, None, address,
                                f"association from calling AE {caller!r} refused: not in inbound.allowed_callers")

    def start(self) -> None:
        from pynetdicom import evt

        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REJECTED, self._on_rejected)]
        self.server = self._ae().start_server((self.inbound.host, self.inbound.port), block=False,
                                              evt_handlers=handlers)
        LOG.info("C-STORE SCP %s listening on %s:%d", self.inbound.ae_title, self.inbound.host, self.inbound.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
