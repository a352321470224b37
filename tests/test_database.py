"""The service database on SQLite and on a real PostgreSQL 15 server: migrations and the job store."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, text, update
from sqlalchemy.orm import Session

from recon_service.db import make_engine, upgrade_to_head
from recon_service.db.migrate import current_revision, downgrade_to, head_revision
from recon_service.db.schema import Job
from recon_service.jobs.store import JobConflict, JobState, JobStore, NewInput, QueueFull

TABLES = {"jobs", "job_inputs", "api_tokens", "audit_events"}


def _input(name: str = "scan.h5") -> NewInput:
    return NewInput(filename=name, path=f"uploads/x/0-{name}", size=1234, sha256="ab" * 32, kind="fastmri")


def test_migrations_from_empty_idempotent_and_reversible(database_url):
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
        assert upgrade_to_head(engine) == head_revision()
        assert current_revision(engine) == head_revision()
        assert TABLES <= set(inspect(engine).get_table_names())
        store = JobStore(engine)
        job, _ = store.create("mri-zero-filled", [_input()], owner="alice")

        # a second run (a restarted service) changes nothing and keeps the data
        assert upgrade_to_head(engine) == head_revision()
        assert current_revision(engine) == head_revision()
        assert store.get(job.id) is not None

        assert downgrade_to(engine, "base") is None
        assert not TABLES & set(inspect(engine).get_table_names())

        upgrade_to_head(engine)
        assert current_revision(engine) == head_revision()
        assert store.get(job.id) is None and store.count_by_state()["queued"] == 0
        # the re-created audit table is append-only again
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO audit_events (at, actor, action, outcome) "
                              "VALUES (:at, 'a', 'x', 'ok')"), {"at": datetime.now(UTC)})
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_events"))
    finally:
        engine.dispose()


def test_run_seconds_migration_backfills_and_reverts_without_losing_jobs(database_url):
    engine = make_engine(database_url)
    try:
        upgrade_to_head(engine)
        store = JobStore(engine)
        job, _ = store.create("mri-zero-filled", [_input()], owner="alice")
        store.claim_next("w:1")
        done = store.finish(job.id, JobState.SUCCEEDED, result={})
        with Session(engine) as session:
            assert session.get(Job, job.id).run_seconds == pytest.approx(
                (done.finished_at - done.started_at).total_seconds(), abs=1e-3)

        assert downgrade_to(engine, "0001") == "0001"
        assert "run_seconds" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
        start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        with engine.begin() as conn:  # a job finished under 0001: 75 s from start to end
            conn.execute(text("UPDATE jobs SET started_at = :s, finished_at = :f"),
                         {"s": start, "f": start + timedelta(seconds=75)})
            assert conn.execute(text("SELECT count(*) FROM job_inputs")).scalar() == 1

        upgrade_to_head(engine)
        with Session(engine) as session:
            assert session.get(Job, job.id).run_seconds == pytest.approx(75.0)
        assert store.get(job.id).state is JobState.SUCCEEDED and len(store.get(job.id).inputs) == 1
    finally:
        engine.dispose()


def test_job_store_create_read_cancel(db_engine):
    store = JobStore(db_engine)
    params = {"lam": 0.01, "maps": "espirit", "nested": {"iters": [1, 2, 3]}}
    study = {"StudyInstanceUID": "1.2.3.4", "PatientName": "Müller^Jürgen"}
    job, created = store.create("mri-cg-sense", [_input("a.h5"), _input("b.dcm")], owner="alice", params=params,
                                study=study, idempotency_key="k-1")
    assert created and job.state is JobState.QUEUED
    assert job.params == params and job.study == study  # JSON columns round-trip nested values and unicode
    assert [(i.position, i.filename) for i in job.inputs] == [(0, "a.h5"), (1, "b.dcm")]
    assert job.created_at.tzinfo is not None
    assert abs(job.created_at - datetime.now(UTC)) < timedelta(minutes=1)

    again, created = store.create("mri-cg-sense", [_input()], owner="alice", idempotency_key="k-1")
    assert not created and again.id == job.id
    other, created = store.create("mri-cg-sense", [_input()], owner="bob", idempotency_key="k-1")
    assert created and other.id != job.id  # the key is per owner
    plain1, _ = store.create("ct-fbp", [_input()], owner="alice")
    plain2, _ = store.create("ct-fbp", [_input()], owner="alice")  # NULL keys never collide
    assert plain1.id != plain2.id

    assert {j.id for j in store.list(owner="alice")} == {job.id, plain1.id, plain2.id}
    assert [j.id for j in store.list(pipeline="mri-cg-sense", owner="bob")] == [other.id]
    assert store.count_by_state()["queued"] == 4
    with pytest.raises(QueueFull):
        store.create("ct-fbp", [_input()], owner="carol", queue_limit=4)

    cancelled = store.cancel(plain2.id)
    assert cancelled.state is JobState.CANCELLED and cancelled.finished_at is not None
    with pytest.raises(JobConflict):
        store.cancel(plain2.id)
    with pytest.raises(KeyError):
        store.cancel("no-such-job")


def test_job_store_run_finish_and_cancel_running(db_engine):
    store = JobStore(db_engine)
    first, _ = store.create("mri-zero-filled", [_input()], owner="alice")
    second, _ = store.create("mri-zero-filled", [_input()], owner="alice")

    claimed = store.claim_next("worker-1")
    assert claimed.id == first.id and claimed.state is JobState.RUNNING  # oldest first
    assert claimed.attempts == 1 and claimed.worker == "worker-1" and claimed.started_at.tzinfo is not None
    assert store.set_progress(first.id, 0.5, "reconstructing") is False
    assert store.get(first.id).progress == 0.5 and store.get(first.id).step == "reconstructing"
    result = {"nifti": "results/x/recon.nii.gz", "provenance": {"method": "zero-filled", "seconds": 0.25}}
    done = store.finish(first.id, JobState.SUCCEEDED, result=result)
    assert done.state is JobState.SUCCEEDED and done.result == result and done.progress == 1.0
    assert done.finished_at >= done.started_at

    running = store.claim_next("worker-2")
    assert running.id == second.id and store.claim_next("worker-3") is None
    assert store.cancel(second.id).state is JobState.RUNNING  # a running job is asked to stop ...
    assert store.set_progress(second.id, 0.7, "step 7") is True  # ... and its worker sees the request
    assert store.finish(second.id, JobState.CANCELLED).state is JobState.CANCELLED
    with pytest.raises(ValueError, match="final"):
        store.finish(second.id, JobState.RUNNING)


def test_job_store_recover_after_crash(db_engine):
    store = JobStore(db_engine)
    ids = [store.create("mri-zero-filled", [_input()], owner="alice")[0].id for _ in range(4)]
    lost_input, _ = store.create("mri-zero-filled", [_input()], owner="alice")  # still queued
    retry, exhausted, broken = ids[0], ids[1], ids[2]
    for _ in range(3):
        store.claim_next("w")  # retry, exhausted, broken are running when the service "dies"
    with db_engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET attempts = 2 WHERE id = :id"), {"id": exhausted})

    outcomes = dict(store.recover(max_attempts=2, missing_inputs={broken, lost_input.id}))
    assert outcomes == {retry: "queued", exhausted: "failed", broken: "failed", lost_input.id: "failed"}
    assert store.get(retry).state is JobState.QUEUED and store.get(retry).worker is None
    assert "2 times" in store.get(exhausted).error
    assert "missing or corrupt" in store.get(broken).error
    assert "missing or corrupt" in store.get(lost_input.id).error
    assert store.get(ids[3]).state is JobState.QUEUED  # never started: untouched
    assert store.claim_next("w2").id == retry  # re-queued work keeps its place (created first)


def test_job_store_finds_stalled_jobs_by_heartbeat_age(db_engine):
    store = JobStore(db_engine)
    quiet, busy, other = (store.create("mri-zero-filled", [_input()], owner="alice")[0].id for _ in range(3))
    store.claim_next("w:1")
    store.claim_next("w:2")
    store.claim_next("w:3")
    with Session(db_engine) as session:  # quiet and other last beat ten minutes ago
        session.execute(update(Job).where(Job.id.in_([quiet, other]))
                        .values(heartbeat_at=datetime.now(UTC) - timedelta(minutes=10)))
        session.commit()
    store.set_progress(busy, 0.5, "reconstructing")
    assert [j.id for j in store.stalled(["w:1", "w:2"], 300)] == [quiet]  # w:3 belongs to another pool
    assert store.stalled(["w:1", "w:2"], 3600) == [] and store.stalled([], 0) == []
    outcome = store.recover_worker("w:1", max_attempts=1, cause="the worker running this job hung")
    assert outcome == [(quiet, "failed")] and "hung 1 times" in store.get(quiet).error


def test_claim_next_race_gives_each_job_to_one_worker(database_url):
    setup = make_engine(database_url)
    upgrade_to_head(setup)
    jobs = {JobStore(setup).create("ct-fbp", [_input()], owner="alice")[0].id for _ in range(24)}
    workers = 6
    barrier = threading.Barrier(workers)
    claims: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        engine = make_engine(database_url)  # its own pool, like a separate worker process
        store = JobStore(engine)
        mine: list[str] = []
        try:
            barrier.wait()
            while (job := store.claim_next(name)) is not None:
                mine.append(job.id)
        except BaseException as err:  # reported below; a thread cannot fail the test itself
            errors.append(err)
        finally:
            claims[name] = mine
            engine.dispose()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    everything = [job_id for mine in claims.values() for job_id in mine]
    assert sorted(everything) == sorted(jobs)  # every job claimed, none twice
    store = JobStore(setup)
    assert {store.get(j).worker for j in jobs} <= set(claims)
    assert all(store.get(j).worker == name for name, mine in claims.items() for j in mine)
    setup.dispose()


def test_concurrent_submissions_with_one_idempotency_key_make_one_job(database_url):
    setup = make_engine(database_url)
    upgrade_to_head(setup)
    setup.dispose()
    clients = 5
    barrier = threading.Barrier(clients)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def submit() -> None:
        engine = make_engine(database_url)
        try:
            barrier.wait()
            job, created = JobStore(engine).create("ct-fbp", [_input()], owner="alice", idempotency_key="retry-1")
            results.append((job.id, created))
        except BaseException as err:
            errors.append(err)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=submit) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_job_duration_histogram_is_aggregated_by_the_database(db_engine):
    from recon_service.api.metrics import DURATION_BUCKETS, ServiceCollector

    store = JobStore(db_engine)
    runs = {"succeeded": [0.2, 3.0, 45.0], "failed": [700.0]}
    for state, durations in runs.items():
        for seconds in durations:
            job, _ = store.create("ct-fbp", [_input()], owner="alice")
            store.claim_next("w:1")
            store.finish(job.id, JobState(state))
            with Session(db_engine) as session:
                session.execute(update(Job).where(Job.id == job.id).values(run_seconds=seconds))
                session.commit()
    store.create("ct-fbp", [_input()], owner="alice")  # queued: not in the histogram

    family = ServiceCollector._durations(db_engine)
    samples = {(s.name, s.labels["state"], s.labels.get("le")): s.value for s in family.samples}
    for state, durations in runs.items():
        for bound in DURATION_BUCKETS:
            expected = sum(d <= bound for d in durations)
            assert samples[("recon_job_duration_seconds_bucket", state, str(float(bound)))] == expected
        assert samples[("recon_job_duration_seconds_bucket", state, "+Inf")] == len(durations)
        assert samples[("recon_job_duration_seconds_count", state, None)] == len(durations)
        assert samples[("recon_job_duration_seconds_sum", state, None)] == pytest.approx(sum(durations))
    assert {s.labels["state"] for s in family.samples} == {"succeeded", "failed"}
