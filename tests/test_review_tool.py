"""The review tool in a real browser (Playwright's Python package driving Debian's Chromium, headless) against a
real ``recon serve`` and a real Orthanc: sign in, worklist, viewer (scroll, window/level, zoom, panes, difference),
approve one job and reject another, then the audit log, the outbox and the series in Orthanc. A token without the
review scope cannot decide. Screenshots go to test-artifacts/review/."""

import json
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from job_inputs import write_brain_mri
from orthanc import PASSWORD, USER, OrthancServer
from system_deps import install_hint

from recon_service.client import ReconClient
from recon_service.jobs.results import result_dicom_files
from recon_service.local_server import LocalServer

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "review"
TOKENS = "radiologist:jobs:read,review;viewer:jobs:read;submitter:jobs:submit,jobs:read;boss:admin"
ENV = {"RECON_WORKER_THREADS": "1", "OMP_NUM_THREADS": "1", "RECON_WARMUP": "false"}


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: {install_hint('chromium')}", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("review")
    orthanc = OrthancServer().start()
    config = {"destinations": {"archive": {"kind": "dicomweb", "url": orthanc.dicomweb, "username": USER,
                                           "password": PASSWORD}},
              "auto_deliver": {"*": ["archive"]}, "retry": {"initial_s": 0.5, "max_s": 1, "poll_s": 0.1}}
    (tmp / "pacs.json").write_text(json.dumps(config))
    server = LocalServer(tmp / "data", tokens=TOKENS, env={**ENV, "RECON_PACS_CONFIG": str(tmp / "pacs.json")},
                         ready_timeout=120)
    try:
        server.start()
        jobs = []
        with ReconClient(server.url, "submitter") as client:
            for n, name in enumerate(("Able^Ann", "Baker^Bob")):
                raw = write_brain_mri(tmp / f"brain{n}.h5", slices=6, size=64)
                jobs.append(client.submit([raw], "mri-rim", study={"PatientName": name, "PatientID": f"P{n}"})["id"])
            for job_id in jobs:
                assert client.wait(job_id, timeout=300)["state"] == "succeeded"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        yield server, orthanc, jobs
    finally:
        server.stop()
        orthanc.close()


def sign_in(page, server, token: str) -> None:
    page.goto(server.url + "/review/")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_selector("#worklist:not([hidden])")
    # the rows arrive with the worklist's first fetch, after the section shows
    page.wait_for_function("document.querySelector('#refreshed').textContent !== ''")


def open_job(page, job_id: str) -> None:
    page.click(f"tr[data-job='{job_id}']")
    page.wait_for_selector("#viewer:not([hidden])")
    page.wait_for_function("window.reviewStats.firstImageMs !== null")


def test_a_token_without_review_cannot_decide(browser, setup):
    server, _, jobs = setup
    page = browser.new_page()
    page.goto(server.url + "/review/")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#sign-in-error:has-text('not valid')")
    sign_in(page, server, "viewer")
    open_job(page, jobs[0])
    page.click("#approve")
    page.wait_for_selector("#decision-error:has-text('needs the review scope')")
    with ReconClient(server.url, "viewer") as client:
        assert client.job(jobs[0]).get("review") is None
        assert {d["state"] for d in client.deliveries(jobs[0])} == {"awaiting-approval"}
    page.close()


def test_review_approve_and_reject(browser, setup):
    server, orthanc, jobs = setup
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    sign_in(page, server, "radiologist")
    rows = page.locator("#jobs tbody tr")
    assert rows.count() == 2 and "Baker^Bob" in rows.nth(0).inner_text()  # newest first
    page.click("th[data-sort='patient']")
    page.wait_for_function("document.querySelector('#jobs tbody tr').innerText.includes('Able^Ann')")
    open_job(page, jobs[0])
    assert page.locator(".pane").count() == 2  # the learned image and its reference
    # scroll by wheel and keys
    start = page.inner_text("#slice-label")
    page.hover(".pane >> nth=0")
    page.mouse.wheel(0, 100)
    page.wait_for_function(f"document.querySelector('#slice-label').innerText !== {json.dumps(start)}")
    page.keyboard.press("ArrowDown")
    assert page.inner_text("#slice-label") != start
    # window/level by drag, then zoom
    box = page.locator(".pane >> nth=0").bounding_box()
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 180, box["y"] + 60, steps=5)
    page.mouse.up()
    assert page.inner_text("#wl-label") != "window x1.00 level +0.00"
    page.click("#zoom-in")
    transform = page.eval_on_selector(".pane canvas", "c => c.style.transform")
    page.click("#zoom-in")
    assert page.eval_on_selector(".pane canvas", "c => c.style.transform") != transform
    # compare panes: add zero-filled and classical (four panes), then the difference view
    page.check("#pane-choice input[value='zero-filled']")
    page.check("#pane-choice input[value='classical']")
    assert page.locator(".pane").count() == 4
    page.check("#difference")
    assert page.locator(".pane").count() == 5
    assert "PSNR" in page.inner_text("#metrics") and "rim-brain-sim" in page.inner_text("#provenance")
    page.screenshot(path=str(ARTIFACTS / "viewer.png"))
    # slices already seen are not fetched again
    page.keyboard.press("Home")
    page.wait_for_function("document.querySelector('#slice-label').innerText.startsWith('slice 1 ')")
    for key in ("ArrowDown", "ArrowDown", "ArrowUp", "ArrowUp", "End", "Home", "ArrowDown"):
        page.keyboard.press(key)
        page.wait_for_timeout(100)
    page.wait_for_timeout(300)
    keys = page.evaluate("window.reviewStats.keys")
    assert len(keys) == len(set(keys)) and len(keys) >= 6 * 4  # every slice of the 4 panes fetched, each once
    # approve with a comment
    page.fill("#comment", "diagnostic quality")
    page.click("#approve")
    page.wait_for_selector("#decided:has-text('approved by static-1')")
    assert page.is_hidden("#decision-form")
    # reject the other one
    page.click("#back")
    page.select_option("#f-review", "")
    open_job(page, jobs[1])
    page.click("#reject")
    page.wait_for_selector("#decision-error:has-text('needs a comment')")
    page.fill("#comment", "motion artefact")
    page.click("#reject")
    page.wait_for_selector("#decided:has-text('rejected')")
    page.screenshot(path=str(ARTIFACTS / "rejected.png"))
    page.click("#back")
    page.wait_for_selector(f"tr[data-job='{jobs[0]}'] .badge.approved")
    page.screenshot(path=str(ARTIFACTS / "worklist.png"))
    page.close()
    # the outbox sends the approved series; the rejected one stays out; the audit log has both decisions
    with ReconClient(server.url, "boss") as client:
        deadline = time.monotonic() + 60
        while client.deliveries(jobs[0])[0]["state"] != "delivered":
            assert time.monotonic() < deadline, client.deliveries(jobs[0])
            time.sleep(0.2)
        assert client.deliveries(jobs[1])[0]["state"] == "rejected"
        assert client.job(jobs[1])["review"]["comment"] == "motion artefact"
        with pytest.raises(Exception, match="409"):
            client.deliver(jobs[1], "archive")  # a rejected result cannot be pushed by hand either
        audit = httpx.get(server.url + "/v1/audit", headers={"Authorization": "Bearer boss"},
                          params={"limit": 500}).json()
    actions = {(e["action"], e["job_id"]) for e in audit}
    assert ("review.approve", jobs[0]) in actions and ("review.reject", jobs[1]) in actions
    assert ("pacs.deliver", jobs[0]) in actions and ("pacs.deliver", jobs[1]) not in actions
    for job_id, expected in ((jobs[0], 6), (jobs[1], 0)):
        study = str(pydicom.dcmread(result_dicom_files(server.data_dir, job_id)[0]).StudyInstanceUID)
        assert len(orthanc.instances_of_study(study)) == expected


def test_a_flagged_job_is_marked_and_held(browser, setup, tmp_path):
    from pipelines.io.fastmri import write_fastmri
    from pipelines.simulate.third_party import bart_phantom

    server, _, _ = setup
    raw = write_fastmri(tmp_path / "phantom.h5", bart_phantom(96, 8, 1.0, 12, 35.0, seed=3))  # fully sampled
    with ReconClient(server.url, "submitter") as client:
        job_id = client.submit([raw], "mri-rim", study={"PatientName": "Phantom^Bart", "PatientID": "P9"})["id"]
        job = client.wait(job_id, timeout=300)
    assert job["state"] == "succeeded" and job["flagged"] and job["flags"]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    sign_in(page, server, "radiologist")
    badge = page.locator(f"tr[data-job='{job_id}'] .badge.out-of-distribution")
    assert badge.count() == 1 and "noise level" in badge.get_attribute("title")
    open_job(page, job_id)
    assert page.is_visible("#flag") and "Out of distribution" in page.inner_text("#flag")
    consistency = page.inner_text("#consistency")
    assert "data residual" in consistency and "flagged" in consistency and "l1-wavelet" in consistency
    page.screenshot(path=str(ARTIFACTS / "flagged.png"))
    page.close()
    with ReconClient(server.url, "boss") as client:
        assert [d["state"] for d in client.deliveries(job_id)] == ["awaiting-approval"]
        with pytest.raises(Exception, match="flagged out of distribution"):
            client.deliver(job_id, "archive")
