"""Out-of-distribution flags. Raw data made by tools this project did not write (ISMRMRD's simulator, BART's
phantom under BART's masks) comes back from every learned method either at least as good as L1-wavelet or flagged;
a flagged job says so in its status and its DICOM, and is never delivered to a PACS on its own."""

import json

import numpy as np
import pydicom
import pytest
from job_inputs import submit
from system_deps import require_tool

from pipelines.confidence import (
    FLAG_NOTE,
    FlagThresholds,
    calibrate,
    consistency_report,
    consistency_summary,
    thresholds_of,
)
from pipelines.io.fastmri import write_fastmri
from pipelines.metrics import psnr
from pipelines.pipeline import reconstruct
from pipelines.reconstructors import default_models
from pipelines.simulate import mri
from pipelines.simulate.third_party import bart_phantom, ismrmrd_shepp_logan
from pipelines.zoo import load_card
from recon_service.api.schemas import JobOut
from recon_service.context import ServiceContext
from recon_service.jobs.results import result_dicom_files
from recon_service.jobs.runner import run_job
from recon_service.jobs.store import JobState
from recon_service.pacs.config import PacsConfig
from recon_service.pacs.outbox import AWAITING_APPROVAL, PENDING, planned_deliveries
from recon_service.settings import Settings

pytestmark = pytest.mark.usefixtures("single_thread")

LEARNED = ["recurrentvarnet", "rim"]


@pytest.fixture(scope="module")
def third_party():
    require_tool("ismrmrd_generate_cartesian_shepp_logan", "ismrmrd-tools")
    require_tool("bart", "bart")
    return {"ismrmrd-equispaced-4x": ismrmrd_shepp_logan(96, 8, 4, 12, 0.05),
            "bart-poisson-4x": bart_phantom(128, 8, 4.0, 12, 35.0, seed=1),
            "bart-full": bart_phantom(128, 8, 1.0, 12, 35.0, seed=3)}


def test_every_shipped_model_is_calibrated():
    for method in LEARNED:
        card = load_card(default_models()[method])
        limits = thresholds_of(card)
        assert limits is not None and limits.residual > 1, card["id"]
        (low, at_low), (high, at_high) = limits.disagreement
        assert 3 < low < 5 < 7 < high < 9 and 0 < at_low < at_high < 1  # about 4x and 8x, higher at 8x
        rates = card["ood"]["false_flag_rate"]
        assert rates["held-out pooled"] < 0.05 and rates["held-out files"] >= 40


@pytest.mark.parametrize("case", ["ismrmrd-equispaced-4x", "bart-poisson-4x", "bart-full"])
@pytest.mark.parametrize("method", LEARNED)
def test_third_party_data_is_at_least_l1_wavelet_or_flagged(method, case, third_party):
    acq = third_party[case]
    learned = reconstruct(acq, method).volume
    report = learned.attrs["consistency_report"]
    assert report["calibrated"]
    baseline = reconstruct(acq, "l1-wavelet").volume
    ours, theirs = psnr(acq.reference, np.abs(learned.data)), psnr(acq.reference, np.abs(baseline.data))
    assert report["flagged"] or ours >= theirs, (case, method, ours, theirs, report)
    if report["flagged"]:
        assert report["reasons"] and all("in distribution at most" in r for r in report["reasons"])


def test_report_and_flag_follow_the_thresholds():
    cfg = mri.MRISimulationConfig(size=64, coils=4, slices=1)
    acq = mri.simulate_slab("t2", "axial", 100, 4.0, cfg, seed=2)
    measured = {"residual_network": 1.1, "residual_network_max": 1.3, "residual": 1.0, "mode": "noise-weighted"}
    image = reconstruct(acq, "cg-sense").volume.data
    lenient = {"ood": {"thresholds": {"residual": 2.0, "disagreement": [[4.0, 0.9], [8.0, 0.95]]}}}
    calm = consistency_report(acq, image, measured, lenient)
    assert calm["calibrated"] and not calm["flagged"] and calm["reasons"] == []
    assert 0 < calm["disagreement"] < 0.9 and calm["baseline"] == "l1-wavelet" and calm["expected_residual"] == 1
    strict = {"ood": {"thresholds": {"residual": 1.2, "disagreement": [[4.0, 1e-4], [8.0, 2e-4]]}}}
    flagged = consistency_report(acq, image, measured, strict)
    assert flagged["flagged"] and len(flagged["reasons"]) == 2 and "1.30 x the noise level" in flagged["reasons"][0]
    assert 3 < flagged["acceleration"] < 5 and "at 4." in flagged["reasons"][1]
    unknown = consistency_report(acq, image, measured, {})
    assert not unknown["calibrated"] and not unknown["flagged"] and unknown["reasons"] == []
    assert "no out-of-distribution thresholds" in unknown["note"]
    calibrated_with = {"mode": "fast", "steps": 50, "samples": 4, "gamma": 8.0}  # a prior's sampler settings
    fast_only = {"ood": {**strict["ood"], "sampler": calibrated_with}}
    assert consistency_report(acq, image, measured, fast_only, sampler=calibrated_with)["flagged"]
    exact = consistency_report(acq, image, measured, fast_only, sampler={"mode": "adps", "steps": 100, "samples": 4})
    assert not exact["calibrated"] and not exact["flagged"]
    assert "mode=fast, not adps; steps=50, not 100" in exact["note"]
    assert exact["calibrated_sampler"] == calibrated_with and "calibrated_sampler" not in unknown
    assert "not calibrated for these sampler settings" in consistency_summary(exact)
    other_weight = consistency_report(acq, image, measured, fast_only, sampler={**calibrated_with, "gamma": 1.0})
    assert not other_weight["calibrated"] and other_weight["note"].endswith("(gamma=8.0, not 1.0)")
    assert "not calibrated for this model" in consistency_summary(unknown)
    spread = FlagThresholds(9.0, ((4.0, 0.9),), uncertainty=0.01)  # a diffusion method's third criterion
    assert spread.reasons({"uncertainty": {"mean": 0.005}, "disagreement": 0.1, "acceleration": 4.0}) == []
    assert "uncertainty mean 2.00%" in spread.reasons({"uncertainty": {"mean": 0.02}})[0]
    assert thresholds_of({"ood": {"thresholds": spread.to_dict()}}) == spread
    limits = FlagThresholds(1.2, ((4.0, 0.1), (8.0, 0.2)))
    assert limits.disagreement_at(6.0) == pytest.approx(0.15) and limits.disagreement_at(2.0) == pytest.approx(0.05)
    assert limits.disagreement_at(1.0) == pytest.approx(0.1 / 3)  # never below a third of the first limit
    polyline = FlagThresholds(1.2, ((4.0, 0.1), (8.0, 0.3), (16.0, 0.2)))  # CT: one point per acquisition kind
    assert [polyline.disagreement_at(r) for r in (6.0, 8.0, 12.0, 20.0, 2.0)] == pytest.approx(
        [0.2, 0.3, 0.25, 0.15, 0.1 / 3])  # beyond the ends along the end segments, floored as above
    assert limits.reasons({"residual_network_max": 1.1, "disagreement": 0.12, "acceleration": 6.0}) == []
    assert len(limits.reasons({"residual_network_max": 1.1, "disagreement": 0.12, "acceleration": 4.0})) == 1


def test_a_residual_limit_that_grows_with_the_undersampling():
    """CT's calibration (``residual_by_acceleration``): at each kind of acquisition, the margin x the largest residual
    of that kind and of every kind less undersampled, read along the polyline like the disagreement."""
    rows = [{"nominal": "8 views", "acceleration": 8.0, "residual_network_max": 4.0, "disagreement": 0.2},
            {"nominal": "8 views", "acceleration": 8.0, "residual_network_max": 6.0, "disagreement": 0.1},
            {"nominal": "4 views", "acceleration": 16.0, "residual_network_max": 5.0, "disagreement": 0.3},
            {"nominal": "2 views", "acceleration": 32.0, "residual_network_max": 10.0, "disagreement": 0.4},
            {"nominal": "16 views", "acceleration": 4.0, "residual_network_max": 2.0, "disagreement": 0.1}]
    limits = calibrate(rows, 1.5, residual_by_acceleration=True)
    def flat(points):
        return [x for point in points for x in point]

    assert flat(limits.residual) == pytest.approx([4.0, 3.0, 8.0, 9.0, 16.0, 9.0, 32.0, 15.0])
    assert calibrate(rows, 1.5).residual == pytest.approx(15.0)  # the MRI flags' one limit
    assert [limits.residual_at(a) for a in (6.0, 24.0, 2.0, None)] == pytest.approx([6.0, 12.0, 1.0, 15.0])
    assert flat(limits.disagreement) == pytest.approx([4.0, 0.15, 8.0, 0.3, 16.0, 0.45, 32.0, 0.6])
    assert limits.reasons({"residual_network_max": 8.0, "disagreement": 0.2, "acceleration": 16.0}) == []
    too_far = limits.reasons({"residual_network_max": 8.0, "disagreement": 0.2, "acceleration": 6.0})
    assert too_far == ["the network image contradicts its own data: residual 8.00 x the noise level (in "
                       "distribution at most 6.00 at 6.0x)"]
    assert thresholds_of({"ood": {"thresholds": json.loads(json.dumps(limits.to_dict()))}}) == limits


def test_a_flagged_job_says_so_and_waits_for_a_reviewer(tmp_path, third_party):
    context = ServiceContext.create(Settings(data_dir=tmp_path / "data", providers="CPUExecutionProvider",
                                             warmup=False))
    try:
        source = write_fastmri(tmp_path / "phantom.h5", third_party["bart-full"])
        job = submit(context.store, context.settings.data_dir, "mri-rim", [(source, "phantom.h5", "fastmri")])
        result = run_job(context.settings, job, lambda *_: None)
        report = result["provenance"]["consistency_report"]
        assert report["flagged"] and report["residual_network_max"] > report["thresholds"]["residual"]
        context.store.claim_next("w")
        context.store.finish(job.id, JobState.SUCCEEDED, result=result)
        status = JobOut.of(context.store.get(job.id))
        assert status.flagged and status.flags == report["reasons"]
        for path in result_dicom_files(context.settings.data_dir, job.id):
            ds = pydicom.dcmread(path)
            assert ds.SeriesDescription.startswith(FLAG_NOTE)
            assert ds.ImageComments.startswith("OUT OF DISTRIBUTION: ") and "Consistency report" in ds.ImageComments
    finally:
        context.engine.dispose()
    # even where learned results may go out unreviewed, a flagged one waits for approval
    config = PacsConfig.model_validate({"destinations": {"web": {"kind": "dicomweb", "url": "http://pacs/dicom-web"}},
                                        "auto_deliver": {"*": ["web"]}, "deliver_learned_unreviewed": True})
    assert planned_deliveries(config, "mri-rim", learned=True) == [("web", PENDING)]
    assert planned_deliveries(config, "mri-rim", learned=True, flagged=True) == [("web", AWAITING_APPROVAL)]


def test_the_report_survives_a_baseline_that_cannot_calibrate():
    cfg = mri.MRISimulationConfig(size=32, coils=4, slices=1)
    acq = mri.simulate_slab("t1", "axial", 100, 8.0, cfg, seed=4)  # 2 calibration lines: too few for ESPIRiT
    assert acq.num_low_frequencies == 2
    report = reconstruct(acq, "rim").volume.attrs["consistency_report"]
    assert report["disagreement"] is not None and "baseline_error" not in report  # L1-wavelet on ACS maps
    measured = {"residual_network": 1.0, "residual_network_max": 1.0, "mode": "off"}
    blank = mri.simulate_slab("t1", "axial", 100, 8.0, cfg, seed=4)
    blank.kspace[:] = 0  # nothing for any baseline to calibrate on
    report = consistency_report(blank, np.zeros((1, 32, 32), np.complex64), measured, {})
    assert report["disagreement"] is None and report["baseline_error"]


def test_recon_batch_lists_flagged_files(tmp_path, run_recon, third_party):
    import json

    source = tmp_path / "in"
    source.mkdir()
    write_fastmri(source / "phantom.h5", third_party["bart-full"])
    proc = run_recon("batch", str(source), "--pipeline", "mri-rim", "--out", str(tmp_path / "out"), "--workers", "1")
    assert "out of distribution: " in proc.stdout and "phantom.h5" in proc.stdout
    [done] = [json.loads(line) for line in (tmp_path / "out" / "status.jsonl").read_text().splitlines()
              if json.loads(line)["status"] == "done"]
    assert done["flags"] and "noise level" in done["flags"][0]
