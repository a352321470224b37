"""Received DICOM (C-STORE SCP or STOW-RS), grouped into series and routed by rules to jobs.

An instance is checked before anything is written (:func:`check_instance`: the identifying UIDs, pixel data and
a rule that takes it); a refused one gets a DICOM status the sender understands and is stored nowhere. An
accepted one is written durably to ``DATA_DIR/inbox/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` (a resend
overwrites the same file) and counted on its series' ``inbox_series`` row.

A series is complete once no instance of it has arrived for ``inbound.series_timeout_s``. The router then turns it
into its rule's job: the CT image series is forward-projected to a sparse-view sinogram with the series as
reference (``pipelines.simulate.ct``), stored with one of the series' files (the job's patient and study), and
queued like an upload. The job is created with an idempotency key of the series and its first arrival, so a
router that crashed half-way cannot queue it twice.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

import pydicom
from pydicom import Dataset
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipelines.io.durable import fsync_path
from recon_service.audit import AuditLog
from recon_service.db.schema import InboxSeries
from recon_service.jobs.store import JobStore, utcnow
from recon_service.pacs.config import InboundRule, PacsConfig
from recon_service.pacs.polling import PollingThread

LOG = logging.getLogger(__name__)
INBOX_DIR = "inbox"
RECEIVING, ROUTING, ROUTED, FAILED = "receiving", "routing", "routed", "failed"
UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
# DICOM status codes a storage SCU understands (PS3.4 GG.4-1 and C.4.2.1.5)
CANNOT_UNDERSTAND = 0xC000
NOT_MATCHING_SOP_CLASS = 0xA900
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
SUCCESS = 0x0000
ACTOR = "dicom-inbox"


class Refused(Exception):
    """An instance the inbox does not take; ``status`` is the DICOM status to answer with."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def matching_rule(rules: list[InboundRule], ds: Dataset) -> InboundRule | None:
    """The first rule whose modality, SOP class and series description (a regular expression) all match."""
    for rule in rules:
        match = rule.match
        if match.modality is not None and str(ds.get("Modality", "")) != match.modality:
            continue
        if match.sop_class is not None and str(ds.get("SOPClassUID", "")) != match.sop_class:
            continue
        if match.series_description is not None and not re.search(match.series_description,
                                                                   str(ds.get("SeriesDescription", ""))):
            continue
        return rule
    return None


def check_instance(ds: Dataset, rules: list[InboundRule]) -> InboundRule:
    """The rule that takes ``ds``; :class:`Refused` with the status and reason otherwise."""
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = str(ds.get(keyword, "") or "")
        if not value or len(value) > 64 or not UID.fullmatch(value):
            raise Refused(CANNOT_UNDERSTAND, f"{keyword} is missing or not a valid UID")
    if "PixelData" not in ds or not ds.get("Rows") or not ds.get("Columns"):
        raise Refused(NOT_MATCHING_SOP_CLASS, "not an image: no pixel data, Rows or Columns")
    rule = matching_rule(rules, ds)
    if rule is None:
        raise Refused(SOP_CLASS_NOT_SUPPORTED,
                      f"no routing rule takes {ds.get('Modality', '?')} {ds.SOPClassUID} series "
                      f"{str(ds.get('SeriesDescription', ''))[:64]!r}")
    return rule


class Inbox:
    """Stores accepted instances and keeps the ``inbox_series`` rows; shared by the SCP and the STOW-RS route."""

    def __init__(self, engine, data_dir: Path, config: PacsConfig, audit: AuditLog):  # noqa: ANN001
        self.engine, self.data_dir, self.config, self.audit = engine, Path(data_dir), config, audit
        self.root = self.data_dir / INBOX_DIR

    def series_dir(self, series_uid: str) -> Path:
        if not UID.fullmatch(series_uid) or len(series_uid) > 64:
            raise ValueError(f"not a UID: {series_uid[:70]!r}")
        return self.root / series_uid

    def receive(self, ds: Dataset, via: str, sender: str) -> int:
        """Check and store one instance; returns the DICOM status (0 when stored). Refusals are audited."""
        try:
            rule = check_instance(ds, self.config.inbound.rules)
        except Refused as refused:
            self.audit.record(f"{via}:{sender}"[:128], "dicom.receive", "rejected", None,
                              str(ds.get("StudyInstanceUID", "") or "")[:64] or None, None,
                              f"status 0x{refused.status:04X}: {refused.reason}"[:2000])
            return refused.status
        try:
            new = self._write(ds)
        except OSError as err:
            LOG.error("inbox: cannot store an instance (%s)", err)
            return OUT_OF_RESOURCES
        self._count(ds, rule, via, sender, new)
        return SUCCESS

    def _write(self, ds: Dataset) -> bool:
        folder = self.series_dir(str(ds.SeriesInstanceUID))
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{ds.SOPInstanceUID}.dcm"
        existed = final.exists()
        tmp = folder / f".{uuid.uuid4().hex}.part"
        try:
            ds.save_as(tmp, enforce_file_format=True)
            fsync_path(tmp)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_path(folder)
        return not existed

    def _count(self, ds: Dataset, rule: InboundRule, via: str, sender: str, new: bool) -> None:
        series_uid, now = str(ds.SeriesInstanceUID), utcnow()
        for _ in range(3):
            with Session(self.engine) as session:
                row = session.get(InboxSeries, series_uid)
                if row is None:
                    session.add(InboxSeries(series_uid=series_uid, study_uid=str(ds.StudyInstanceUID), rule=rule.name,
                                            via=via, sender=sender[:128], state=RECEIVING, instances=1,
                                            first_at=now, last_at=now))
                else:
                    if row.state in (ROUTED, FAILED):  # a late instance starts a new group of the series
                        row.state, row.instances, row.first_at, row.job_id, row.error = RECEIVING, 0, now, None, None
                    row.instances += 1 if new or row.instances == 0 else 0
                    row.last_at = now
                try:
                    session.commit()
                    return
                except IntegrityError:  # two first instances of one series at once: the other row wins, count again
                    session.rollback()

    def due(self) -> list[InboxSeries]:
        limit = utcnow() - timedelta(seconds=self.config.inbound.series_timeout_s)
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(select(InboxSeries).where(InboxSeries.state == RECEIVING,
                                                                  InboxSeries.last_at < limit)))

    def claim(self, row: InboxSeries) -> bool:
        """receiving -> routing, unless an instance arrived since ``row`` was read."""
        with Session(self.engine) as session:
            claimed = session.execute(update(InboxSeries).where(
                InboxSeries.series_uid == row.series_uid, InboxSeries.state == RECEIVING,
                InboxSeries.last_at == row.last_at).values(state=ROUTING)).rowcount
            session.commit()
            return bool(claimed)

    def settle(self, series_uid: str, state: str, job_id: str | None = None, error: str | None = None) -> None:
        with Session(self.engine) as session:
            session.execute(update(InboxSeries).where(InboxSeries.series_uid == series_uid)
                            .values(state=state, job_id=job_id, error=error))
            session.commit()

    def reset_interrupted(self) -> int:
        """Series a crashed router left in ``routing`` go back to ``receiving`` (their job key stops doubles)."""
        with Session(self.engine) as session:
            count = session.execute(update(InboxSeries).where(InboxSeries.state == ROUTING)
                                    .values(state=RECEIVING)).rowcount
            session.commit()
            return count


def series_job(inbox: Inbox, store: JobStore, row: InboxSeries, max_upload_bytes: int) -> str:
    """Turn a complete series into its rule's job (simulated sinogram + one file of the series); returns the job id.
    Raises ValueError with the reason when the series cannot become one."""
    from pipelines.simulate.ct import simulate_ct_dataset
    from recon_service.jobs.catalog import get_pipeline
    from recon_service.jobs.inputs import RejectedInput, check_submission
    from recon_service.storage import UploadArea

    rules = {r.name: r for r in inbox.config.inbound.rules}
    rule = rules.get(row.rule)
    if rule is None:
        raise ValueError(f"routing rule {row.rule!r} is no longer configured")
    folder = inbox.series_dir(row.series_uid)
    files = sorted(folder.glob("*.dcm"))
    if not files:
        raise ValueError("no stored instance of the series")
    sim = rule.simulate
    info = get_pipeline(rule.pipeline)
    job_id = uuid.uuid4().hex
    area = UploadArea(inbox.data_dir, job_id, max_upload_bytes)
    with tempfile.TemporaryDirectory(dir=inbox.data_dir) as scratch:
        [sinogram] = simulate_ct_dataset(Path(scratch), views=sim.views, arc_deg=sim.arc_deg, noise_i0=sim.noise_i0,
                                         source=str(folder), size=sim.size, slices=sim.slices)
        try:
            for source, name in ((sinogram, f"{rule.name}-sinogram.h5"), (files[0], "series-instance.dcm")):
                writer = area.open(name)
                with open(source, "rb") as f:
                    while chunk := f.read(1 << 20):
                        writer.write(chunk)
                area.add(writer.finish())
            checked = check_submission(info, area.files, {})
            area.sync()
            key = f"inbox:{row.series_uid}:{row.first_at.isoformat()}"
            job, created = store.create(info.name, checked.inputs, f"{row.via}:{row.sender}"[:128], rule.params,
                                        checked.study, key, None, job_id)
        except RejectedInput as err:
            area.discard()
            raise ValueError(str(err)) from err
        except BaseException:
            area.discard()
            raise
        if not created:
            area.discard()
    return job.id


class InboxRouter(PollingThread):
    """A thread that routes complete series to jobs until stopped."""

    name = "dicom-inbox"

    def __init__(self, inbox: Inbox, store: JobStore, max_upload_bytes: int, poll_s: float = 0.5):
        super().__init__()
        self.inbox, self.store, self.max_upload_bytes, self.poll_s = inbox, store, max_upload_bytes, poll_s

    def start(self) -> None:
        self.inbox.reset_interrupted()
        super().start()

    def run_once(self) -> list[str]:
        """Route every complete series; returns the jobs created (none: the thread waits ``poll_s``)."""
        jobs = []
        for row in self.inbox.due():
            if not self.inbox.claim(row):
                continue
            try:
                job_id = series_job(self.inbox, self.store, row, self.max_upload_bytes)
            except Exception as err:  # noqa: BLE001 - the series fails with its reason; the router goes on
                reason = f"{type(err).__name__}: {err}" if not isinstance(err, ValueError) else str(err)
                self.inbox.settle(row.series_uid, FAILED, error=reason[:500])
                self.inbox.audit.record(ACTOR, "dicom.route", "failed", None, row.study_uid, None,
                                        f"series {row.series_uid} ({row.instances} instances, rule {row.rule}): "
                                        f"{reason}"[:2000])
                LOG.warning("inbox: series %s could not be routed: %s", row.series_uid, reason)
                continue
            self.inbox.settle(row.series_uid, ROUTED, job_id=job_id)
            shutil.rmtree(self.inbox.series_dir(row.series_uid), ignore_errors=True)
            self.inbox.audit.record(ACTOR, "dicom.route", "ok", job_id, row.study_uid, None,
                                    f"series {row.series_uid} ({row.instances} instances via {row.via} from "
                                    f"{row.sender}) -> rule {row.rule}")
            LOG.info("inbox: series %s -> job %s", row.series_uid, job_id)
            jobs.append(job_id)
        return jobs


def read_instance(data: bytes) -> Dataset:
    """A DICOM Part 10 instance from bytes; ValueError when it is not one."""
    import io

    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception as err:  # noqa: BLE001 - any parse failure is "cannot understand"
        raise ValueError(f"not a DICOM Part 10 instance ({type(err).__name__})") from err
