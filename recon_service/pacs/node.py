"""The PACS services of one node, started with the service (or a standalone worker pool) and stopped with it: the
outbox sender, and the inbox router with the C-STORE SCP."""

from __future__ import annotations

import logging

from recon_service.pacs.inbox import Inbox, InboxRouter
from recon_service.pacs.outbox import Outbox, OutboxRunner, deidentification_secret

LOG = logging.getLogger(__name__)


def start_outbox_runner(context) -> OutboxRunner | None:  # noqa: ANN001 - recon_service.context.ServiceContext
    """Start the outbox sender thread of a service or worker node, when PACS destinations are configured."""
    if not context.pacs.enabled:
        return None
    runner = OutboxRunner(Outbox(context.engine, context.pacs), context.settings.data_dir, context.audit,
                          deidentification_secret(context.settings.data_dir))
    runner.start()
    LOG.info("PACS outbox sending to %s", ", ".join(sorted(context.pacs.destinations)))
    return runner


class InboundHandle:
    """The inbox router thread and the C-STORE SCP of a service node; ``stop()`` ends both."""

    def __init__(self, router: InboxRouter, scp) -> None:  # noqa: ANN001 - StorageSCP | None
        self.router, self.scp = router, scp

    def stop(self) -> None:
        if self.scp is not None:
            self.scp.stop()
        self.router.stop()


def start_inbound(context) -> InboundHandle | None:  # noqa: ANN001 - recon_service.context.ServiceContext
    """Start the router and (with ``inbound.port``) the C-STORE SCP, when routing rules are configured."""
    from recon_service.pacs.scp import StorageSCP  # pynetdicom is loaded only where a port is configured

    inbound = context.pacs.inbound
    if not inbound.rules:
        return None
    inbox = Inbox(context.engine, context.settings.data_dir, context.pacs, context.audit)
    router = InboxRouter(inbox, context.store, int(context.settings.max_upload_mb * 2**20))
    router.start()
    scp = None
    if inbound.port is not None:
        scp = StorageSCP(inbox, inbound)
        scp.start()
    return InboundHandle(router, scp)
