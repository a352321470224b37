"""JobStore on a real SQLite database (WAL, as the service opens it): submission, queue, claims, cancel,
listing and recovery after a restart."""

import multiprocessing
import threading
import time

import pytest

from recon_service.db import make_engine, upgrade_to_head
from recon_service.jobs.store import JobConflict, JobState, JobStore, NewInput, QueueFull


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def store(db_url) -> JobStore:
    engine = make_engine(db_url)
    upgrade_to_head(engine)
    yield JobStore(engine)
    engine.dispose()


def _inputs(n: int = 1) -> list[NewInput]:
    return [NewInput(f"f{i}.h5", f"uploads/x/{i}-f{i}.h5", 10 + i, "0" * 64, "fastmri") for i in range(n)]


def test_create_records_inputs_in_order_and_starts_queued(store):
    job, created = store.create("mri-cg-sense", _inputs(3), "alice", params={"lam": 0.01}, study={"uid": "1.2"})
    assert created and job.state == JobState.QUEUED and job.progress == 0.0 and job.attempts == 0
    again = store.get(job.id)
    assert [i.filename for i in again.inputs] == ["f0.h5", "f1.h5", "f2.h5"]
    assert [i.position for i in again.inputs] == [0, 1, 2]
    assert again.params == {"lam": 0.01} and again.study == {"uid": "1.2"} and again.owner == "alice"
    assert store.get("nope") is None


def test_idempotency_key_returns_the_same_job_per_owner(store):
    first, created = store.create("ct-fbp", _inputs(), "alice", idempotency_key="k1")
    second, created_again = store.create("ct-fbp", _inputs(), "alice", idempotency_key="k1")
    assert created and not created_again and second.id == first.id
    other, created_other = store.create("ct-fbp", _inputs(), "bob", idempotency_key="k1")
    assert created_other and other.id != first.id
    assert len(store.list()) == 2


def test_queue_limit_counts_only_queued_jobs(store):
    for _ in range(2):
        store.create("ct-fbp", _inputs(), "alice", queue_limit=2)
    with pytest.raises(QueueFull):
        store.create("ct-fbp", _inputs(), "alice", queue_limit=2)
    assert store.count_by_state()["queued"] == 2
    store.claim_next("w:1")  # a running job frees a place in the queue
    job, created = store.create("ct-fbp", _inputs(), "alice", queue_limit=2)
    assert created and store.count_by_state() == {"queued": 2, "running": 1, "succeeded": 0, "failed": 0,
                                                  "cancelled": 0}
    # a repeated submission (same idempotency key) is answered with its job even when the queue is full
    keyed, _ = store.create("ct-fbp", _inputs(), "bob", idempotency_key="k")  # no limit given: accepted
    with pytest.raises(QueueFull):
        store.create("ct-fbp", _inputs(), "bob", idempotency_key="k2", queue_limit=2)
    again, created = store.create("ct-fbp", _inputs(), "bob", idempotency_key="k", queue_limit=2)
    assert again.id == keyed.id and not created


def test_claim_takes_oldest_first_and_counts_attempts(store):
    ids = [store.create("ct-fbp", _inputs(), "alice")[0].id for _ in range(3)]
    claimed = store.claim_next("host:1")
    assert claimed.id == ids[0] and claimed.state == JobState.RUNNING and claimed.worker == "host:1"
    assert claimed.attempts == 1 and claimed.started_at is not None and claimed.step == "starting"
    assert [store.claim_next("host:1").id for _ in range(2)] == ids[1:]
    assert store.claim_next("host:1") is None


def _claim_all(url: str, name: str, ready, go, out) -> None:  # noqa: ANN001 - runs in a spawned process
    engine = make_engine(url)
    store = JobStore(engine)
    got: list[tuple[str, str]] = []

    def claim(worker: str) -> None:
        go.wait(30)
        while (job := store.claim_next(worker)) is not None:
            got.append((job.id, worker))

    threads = [threading.Thread(target=claim, args=(f"{name}:{t}",)) for t in range(2)]
    for t in threads:
        t.start()
    ready.put(name)
    for t in threads:
        t.join()
    out.put(got)


def test_claim_next_never_hands_a_job_to_two_claimers(store, db_url):
    ids = {store.create("ct-fbp", _inputs(), "alice")[0].id for _ in range(120)}
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(db_url, f"p{i}", ready, go, out)) for i in range(3)]
    for p in procs:
        p.start()
    for _ in procs:  # all six claimers start together
        ready.get(timeout=60)
    go.set()
    claims = [pair for _ in procs for pair in out.get(timeout=60)]
    for p in procs:
        p.join(10)
    claimed = [job_id for job_id, _ in claims]
    assert len(claimed) == len(set(claimed)) == len(ids) and set(claimed) == ids
    assert len({worker for _, worker in claims}) > 1  # they really raced
    for job_id, worker in claims:  # the row names the one claimer that got it, on its first attempt
        job = store.get(job_id)
        assert job.worker == worker and job.attempts == 1 and job.state == JobState.RUNNING


def test_progress_finish_and_cancel_of_running_job(store):
    job, _ = store.create("ct-sirt", _inputs(), "alice")
    store.claim_next("w:1")
    assert store.set_progress(job.id, 0.5, "reconstructing iteration 5/10") is False
    now = store.get(job.id)
    assert now.progress == 0.5 and now.step == "reconstructing iteration 5/10" and now.heartbeat_at is not None
    assert store.set_progress(job.id, 7.0, "x") is False and store.get(job.id).progress == 1.0  # clamped
    asked = store.cancel(job.id)
    assert asked.state == JobState.RUNNING and asked.cancel_requested  # the worker ends it
    assert store.set_progress(job.id, 0.6, "reconstructing iteration 6/10") is True
    ended = store.finish(job.id, JobState.CANCELLED)
    assert ended.state == JobState.CANCELLED and ended.finished_at is not None and ended.step == "cancelled"
    with pytest.raises(JobConflict):
        store.cancel(job.id)
    # a finished job is not changed by a late finish or progress write
    assert store.finish(job.id, JobState.SUCCEEDED, result={"files": {}}).state == JobState.CANCELLED
    store.set_progress(job.id, 0.9, "late")
    assert store.get(job.id).step == "cancelled"
    with pytest.raises(ValueError, match="not a final state"):
        store.finish(job.id, JobState.RUNNING)


def test_cancel_queued_job_at_once_and_unknown_job(store):
    job, _ = store.create("ct-fbp", _inputs(), "alice")
    cancelled = store.cancel(job.id)
    assert cancelled.state == JobState.CANCELLED and cancelled.finished_at is not None
    assert store.claim_next("w:1") is None  # never runs
    with pytest.raises(KeyError):
        store.cancel("0" * 32)


def test_succeeded_and_failed_jobs_keep_result_and_reason(store):
    a, _ = store.create("ct-fbp", _inputs(), "alice")
    b, _ = store.create("ct-fbp", _inputs(), "alice")
    store.claim_next("w:1")
    store.claim_next("w:1")
    done = store.finish(a.id, JobState.SUCCEEDED, result={"files": {"nifti": "results/a/recon.nii.gz"}})
    assert done.progress == 1.0 and done.step == "done" and done.result["files"]["nifti"].endswith(".nii.gz")
    failed = store.finish(b.id, JobState.FAILED, error="input 'f0.h5': file not found")
    assert failed.error == "input 'f0.h5': file not found" and failed.result is None
    with pytest.raises(JobConflict):
        store.cancel(a.id)


def test_list_filters_and_pages_newest_first(store):
    made = []
    for pipeline, owner in [("ct-fbp", "alice"), ("mri-cg-sense", "bob"), ("ct-fbp", "bob"), ("ct-sirt", "alice")]:
        made.append(store.create(pipeline, _inputs(), owner)[0].id)
        time.sleep(0.002)  # distinct creation times
    store.claim_next("w:1")  # the oldest runs
    assert [j.id for j in store.list()] == made[::-1]
    assert [j.id for j in store.list(owner="alice")] == [made[3], made[0]]
    assert [j.id for j in store.list(pipeline="ct-fbp")] == [made[2], made[0]]
    assert [j.id for j in store.list(state="running")] == [made[0]]
    assert [j.id for j in store.list(state="queued", owner="bob")] == [made[2], made[1]]
    assert [j.id for j in store.list(limit=2, offset=1)] == [made[2], made[1]]
    assert store.list(state="failed") == []


def test_recover_requeues_fails_and_cancels_interrupted_jobs(store):
    crashy, fresh, lost, cancelled = (store.create("ct-fbp", _inputs(), "a")[0] for _ in range(4))
    for _ in range(4):
        store.claim_next("dead:1")
    store.cancel(cancelled.id)  # it was running: only flagged, then the service died
    outcomes = dict(store.recover(max_attempts=2, missing_inputs={lost.id}))
    assert outcomes == {crashy.id: "queued", fresh.id: "queued", lost.id: "failed", cancelled.id: "cancelled"}
    for job in (crashy, fresh):
        now = store.get(job.id)
        assert now.state == JobState.QUEUED and now.step == "re-queued" and now.worker is None
    assert store.get(lost.id).error == ("the service stopped during this job and its stored input is missing "
                                        "or corrupt")
    assert store.get(cancelled.id).error is None and store.get(cancelled.id).finished_at is not None
    assert store.claim_next("dead:2").id == crashy.id  # second run, and the service dies again
    outcomes = dict(store.recover(max_attempts=2))
    assert outcomes == {crashy.id: "failed"}
    assert store.get(crashy.id).error.startswith("the service stopped during this job 2 times (limit 2)")
    assert store.get(fresh.id).state == JobState.QUEUED
    assert store.recover(max_attempts=2) == []
    assert store.count_by_state()["running"] == 0


def test_recover_fails_queued_jobs_with_missing_inputs_and_keeps_the_rest(store):
    running, queued_lost, queued_ok = (store.create("ct-fbp", _inputs(), "a")[0] for _ in range(3))
    store.claim_next("dead:1")
    outcomes = dict(store.recover(max_attempts=3, missing_inputs={queued_lost.id}))
    assert outcomes == {running.id: "queued", queued_lost.id: "failed"}
    assert store.get(running.id).worker is None and store.get(running.id).progress == 0.0
    assert store.get(queued_lost.id).error == "the stored input of this queued job is missing or corrupt"
    assert store.get(queued_ok.id).state == JobState.QUEUED


def test_recover_worker_touches_only_that_workers_jobs(store):
    a, b = (store.create("ct-fbp", _inputs(), "a")[0] for _ in range(2))
    store.claim_next("host:11")
    store.claim_next("host:12")
    assert store.recover_worker("host:11", max_attempts=2) == [(a.id, "queued")]
    assert store.get(b.id).state == JobState.RUNNING
    store.claim_next("host:13")  # a's second run, then that worker dies too
    assert store.recover_worker("host:13", max_attempts=2) == [(a.id, "failed")]
    assert store.get(a.id).error.startswith("the worker process running this job died 2 times (limit 2)")
