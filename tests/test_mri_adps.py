"""The adps method (pipeline mri-adps) on the shipped MRI priors: declaration and parameter checks, the CLI, torch and
ONNX agreement of the fast mode, the service's uncertainty results (NIfTI and a DICOM series of the image series'
study) and refusals.

Inputs are small (2 slices of simulated brain, 64 x 64, 4 coils, 4x) with a few steps and 2 draws: these tests check
what the method does, not how well (quality bars come from the benchmarks).
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import numpy as np
import pydicom
import pytest
from dicom_checks import assert_no_errors
from job_inputs import submit, write_brain_mri

from pipelines.data import InputError, MRIAcquisition
from pipelines.io.fastmri import read_fastmri
from pipelines.pipeline import reconstruct
from pipelines.reconstructors import ParamError, get
from pipelines.simulate import mri
from pipelines.zoo import load_card

AMBIENT, FULL = "mri-prior-ambient-brain-sim", "mri-prior-full-brain-sim"
FAST = {"mode": "fast", "steps": 3, "samples": 2}


@pytest.fixture(scope="module")
def brain(tmp_path_factory):
    return write_brain_mri(tmp_path_factory.mktemp("adps") / "brain.h5", size=64, coils=4, slices=2)


def test_method_is_declared_with_its_prior_and_parameters():
    method = get("mri", "adps")
    assert method.learned is not None and method.learned.default_model == AMBIENT
    assert method.progress_unit == "step"
    names = {p.name for p in method.parameters}
    assert {"model_id", "mode", "steps", "step_size", "gamma", "eta", "samples", "seed", "engine", "device",
            "max_batch"} <= names
    assert method.check({}).samples == 4 and method.check({"model_id": FULL}).model_id == FULL


@pytest.mark.parametrize("params, words", [
    ({"mode": "adps", "engine": "onnx"}, ["'mode'", "autograd", "engine torch", "mode fast"]),
    ({"engine": "onnx", "step_size": 2.0}, ["'step_size'", "setting of mode adps", "mode null runs fast"]),
    ({"mode": "adps", "gamma": 1.0}, ["'gamma'", "setting of mode fast", "mode adps runs"]),
    ({"eta": 0.5}, ["'eta'", "mode null runs adps on engine torch"]),
    ({"model_id": "rim-brain-sim"}, ["is a rim, not an mri-prior"]),
    ({"model_id": "no-such-model"}, ["unknown model id"]),
    ({"samples": 0}, ["'samples'", "from 1 to 32"]),
    ({"mode": "exact"}, ["'mode'", "adps, fast"]),
])
def test_bad_parameters_are_refused_naming_why(params, words):
    with pytest.raises(ParamError) as err:
        get("mri", "adps").check(params)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_cli_writes_the_image_and_the_uncertainty_map_with_progress(brain, tmp_path):
    """Exact A-DPS (mode null on the torch engine): 2 slices x 2 steps, 2 draws in one batch."""
    import nibabel as nib

    res = subprocess.run([sys.executable, "-m", "recon_service.cli", "reconstruct", str(brain), "--method", "adps",
                          "--param", "steps=2", "--param", "samples=2", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "4/6" in res.stderr and "6/6" in res.stderr  # then the consistency report's baseline on each slice
    assert "chosen: exact A-DPS (mode null on engine torch), 2 steps" in res.stdout
    image, std = tmp_path / "brain_adps.nii.gz", tmp_path / "brain_adps_uncertainty.nii.gz"
    assert image.is_file() and std.is_file() and f"uncertainty: {std}" in res.stdout
    values = np.asarray(nib.load(str(std)).dataobj)
    assert values.shape == np.asarray(nib.load(str(image)).dataobj).shape and values.min() >= 0 and values.max() > 0


def test_fast_mode_gives_the_same_draws_on_torch_and_onnx(brain):
    """Same seed, same noise: the engines differ by float32 round-off only (measured 2.3e-7 of the image peak for
    the mean, 2.9e-7 for the std map)."""
    acq = read_fastmri(brain)
    torch_volume = reconstruct(acq, "adps", {**FAST, "engine": "torch"}).volume
    onnx_volume = reconstruct(acq, "adps", {**FAST, "engine": "onnx"}).volume
    peak = np.abs(torch_volume.data).max()
    assert np.abs(torch_volume.data - onnx_volume.data).max() < 1e-5 * peak
    assert np.abs(torch_volume.uncertainty - onnx_volume.uncertainty).max() < 1e-5 * peak
    assert torch_volume.attrs["engine"] == "torch-cpu" and onnx_volume.attrs["engine"].startswith("onnxruntime:")
    other = reconstruct(acq, "adps", {**FAST, "engine": "onnx", "seed": 1}).volume
    assert np.abs(other.data - onnx_volume.data).max() > 1e-3 * peak  # the seed matters: the agreement is not vacuous


def test_draws_give_a_mean_and_a_std_map_and_one_draw_none(brain):
    acq = read_fastmri(brain)
    seen: list[tuple[int, int]] = []
    volume = reconstruct(acq, "adps", {**FAST, "engine": "onnx", "samples": 3, "max_batch": 2},
                         progress=lambda done, total: seen.append((done, total))).volume
    # 2 slices x 2 batches of draws (2 + 1) x 3 steps, then the consistency report's baseline on the 2 slices
    assert seen[:12] == [(d, 14) for d in range(1, 13)] and seen[-1] == (14, 14)
    assert volume.data.shape == acq.reference.shape and volume.data.dtype == np.complex64
    assert volume.uncertainty.shape == volume.data.shape and volume.uncertainty.min() >= 0
    assert volume.uncertainty.max() > 0
    chosen = volume.attrs["chosen"]
    assert {k: chosen[k] for k in ("mode", "steps", "gamma", "eta", "cg_iterations", "samples", "prior")} == {
        "mode": "fast", "steps": 3, "gamma": 1.0, "eta": 0.85, "cg_iterations": 5, "samples": 3, "prior": "ambient"}
    assert chosen["gamma"] == load_card(AMBIENT)["sampler_defaults"]["gamma"]  # the card's default (held at 1)
    assert chosen["further_acceleration"] == 5.0
    assert volume.attrs["model_id"] == AMBIENT and len(volume.attrs["weights_sha256"]) == 64
    assert "3 fast A-DPS draws" in volume.attrs["uncertainty_what"]
    # the consistency report: the mean's data residual, the disagreement with L1-wavelet, the spread of the draws
    report = volume.attrs["consistency_report"]
    assert report["residual_network"] > 0.5 and 0 < report["disagreement"] < 1
    expected = np.abs(volume.uncertainty)[np.abs(volume.data) > 0.1 * np.quantile(np.abs(volume.data), 0.99)].mean()
    assert report["uncertainty"]["mean"] == pytest.approx(expected / np.quantile(np.abs(volume.data), 0.99), rel=1e-4)
    # the ambient prior's thresholds hold for the service's settings (50 steps, 4 draws), not these
    assert not report["calibrated"] and not report["flagged"]
    assert "steps=50, not 3; samples=4, not 3" in report["note"] and report["calibrated_sampler"]["steps"] == 50
    assert report["sampler"] == {"mode": "fast", "steps": 3, "samples": 3, "gamma": 1.0, "eta": 0.85,
                                 "cg_iterations": 5, "tv_z": None}  # what the report was made for
    one = reconstruct(acq, "adps", {"model_id": FULL, "steps": 2, "samples": 1}).volume
    assert one.uncertainty is None and one.attrs["chosen"]["prior"] == "fully-sampled"
    assert one.attrs["chosen"]["mode"] == "adps" and one.attrs["engine"] == "torch-cpu"
    assert "further_acceleration" not in one.attrs["chosen"]
    assert not one.attrs["consistency_report"]["calibrated"]  # the full prior's thresholds hold for its fast mode
    exact = reconstruct(acq, "adps", {"steps": 2, "samples": 1}).volume.attrs["consistency_report"]
    assert not exact["calibrated"] and not exact["flagged"] and "mode=fast, not adps" in exact["note"]


def test_the_shipped_priors_flag_thresholds_hold_for_the_services_settings():
    """The service runs ``mri-adps`` with the method's defaults (fast mode on ONNX, the prior's tuned gamma); the
    default prior's card must be calibrated for exactly those settings (benchmarks/mri_ood_calibrate.py), or every
    service image would be reported as not calibrated. And a report of such a run is compared with the card's
    thresholds."""
    from pipelines.confidence import thresholds_of
    from pipelines.methods.adps import ADPSParams, _settings, sampler_record

    card = load_card(AMBIENT)
    params = ADPSParams(engine="onnx")
    ran = sampler_record({"mode": "fast", **_settings(params, "fast", card), "samples": params.samples})
    assert card["ood"]["sampler"] == ran and ran["gamma"] == card["sampler_defaults"]["gamma"]
    assert thresholds_of(card, ran) is not None and thresholds_of(card, {**ran, "steps": 10}) is None
    assert "uncertainty" in card["ood"]["thresholds"]
    # the aim, as the calibration measured it on the held-out brain sets (results/mri_ood_calibrate.json)
    rates = card["ood"]["false_flag_rate"]
    assert rates["held-out pooled"] < 0.05 and rates["held-out files"] >= 40
    assert card["ood"]["third_party_flagged_or_at_least_l1"]


def test_a_priors_tuned_sampler_defaults_are_checked():
    from pipelines.methods.adps import DEFAULTS, prior_defaults

    card = load_card(FULL)
    assert prior_defaults(card)["gamma"] == card["sampler_defaults"]["gamma"] != DEFAULTS["gamma"]
    held = load_card(AMBIENT)["sampler_defaults"]  # chosen 64 on val, held at 1 (the flag's coverage)
    assert prior_defaults(load_card(AMBIENT))["gamma"] == held["gamma"] == 1.0
    assert held["tuned"]["chosen"]["gamma"] == 64 and "third-party" in held["held"]
    assert prior_defaults({"id": "x"}) == DEFAULTS  # a card without them: the method's own
    for bad in ({"gama": 2.0}, {"gamma": -1.0}, {"gamma": "high"}):
        with pytest.raises(ValueError, match="sampler_defaults"):
            prior_defaults({"id": "x", "sampler_defaults": bad})


def test_the_draws_spread_more_on_an_orientation_the_prior_never_saw():
    """The shipped ambient prior was trained on axial slices only. The service's A-DPS (fast mode, ONNX, 4 draws; 20
    steps here) at 8x on one 128 x 128 slice per case: for each trained contrast the uncertainty mean is higher on a
    sagittal slice than on an axial one. Measured: t1 1.15% -> 1.42%, t2 1.18% -> 1.59%, pd 1.11% -> 1.40% (at gamma
    64, the value chosen on val that the card holds back: 0.99% -> 1.18%, 1.02% -> 1.35%, 0.98% -> 1.20%); over
    the benchmark's held-out volumes at the defaults (50 steps) 0.52% / 0.80% axial against 0.92% / 1.14% sagittal
    at 4x / 8x (BENCHMARKS.md, A-DPS's flag). The held-out contrast (FLAIR) shows no such rise, nor does it with
    priors trained further at 64 x 64 (benchmarks/mri_adps_small.py)."""
    cfg = mri.MRISimulationConfig(size=128, coils=8, slices=1)
    for contrast in ("t1", "t2", "pd"):
        spread = {}
        for orientation, index in (("axial", 95), ("sagittal", 100)):
            acq = mri.simulate_slab(contrast, orientation, index, 8.0, cfg, seed=5)
            volume = reconstruct(acq, "adps", {"engine": "onnx", "mode": "fast", "steps": 20, "samples": 4}).volume
            spread[orientation] = volume.attrs["consistency_report"]["uncertainty"]["mean"]
        assert spread["sagittal"] > 1.1 * spread["axial"], (contrast, spread)


def test_volume_mode_joins_the_slices_by_total_variation_along_z():
    """Fast mode with ``tv_z``: the slices are one volume, the data step ADMM-TV(z). Measured (3 slices, 8 steps,
    2 draws, ONNX): mean |x[z+1] - x[z]| 0.0137 slice by slice, 0.0028 with tv_z 0.05. Bar: under half."""

    cfg = mri.MRISimulationConfig(size=128, slices=3)
    acq = mri.simulate_slab("t1", "axial", mri.slab_starts("axial", "test", cfg)[1], 4.0, cfg, seed=11)
    steps = []
    results = {}
    for tv in (None, 0.05):
        params = {"samples": 2, "steps": 8, "engine": "onnx", **({} if tv is None else {"tv_z": tv})}
        volume = reconstruct(acq, "adps", params, progress=lambda d, n: steps.append((d, n))).volume
        assert volume.data.shape == volume.uncertainty.shape == (3, 128, 128)
        results[tv] = float(np.abs(np.diff(np.abs(volume.data), axis=0)).mean())
    # 8 steps over the whole volume, then the consistency report's baseline on its 3 slices
    assert volume.attrs["chosen"]["tv_z"] == 0.05 and (8, 11) in steps and steps[-1] == (11, 11)
    assert results[0.05] < 0.5 * results[None], results
    with pytest.raises(ParamError, match="setting of mode fast"):
        get("mri", "adps").check({"engine": "torch", "tv_z": 0.05})


def test_inputs_the_prior_cannot_take_are_refused(brain):
    acq = read_fastmri(brain)
    odd = MRIAcquisition(kspace=acq.kspace[:, :, :, :60], mask=acq.mask[:, :60], num_low_frequencies=8,
                         source="odd.h5")
    with pytest.raises(InputError, match="60 is not a multiple of 8"):
        reconstruct(odd, "adps", FAST)
    no_centre = acq.mask.copy()
    no_centre[:, 30:34] = 0
    blind = MRIAcquisition(kspace=acq.kspace * no_centre, mask=no_centre, source="blind.h5")
    with pytest.raises(InputError, match="at least 2 calibration lines"):
        reconstruct(blind, "adps", FAST)


def _series(data_dir, relative) -> list[pydicom.Dataset]:
    with zipfile.ZipFile(data_dir / relative) as archive:
        return [pydicom.dcmread(io.BytesIO(archive.read(n))) for n in sorted(archive.namelist())]


def test_service_job_writes_the_uncertainty_map_as_a_dicom_series_of_the_same_study(tmp_path, brain):
    """The job runner as the service runs it (ONNX engine, so mode fast): image series and uncertainty series in
    one study and frame of reference, each with its own series UID and number."""
    from recon_service.context import ServiceContext
    from recon_service.jobs.runner import run_job
    from recon_service.settings import Settings

    context = ServiceContext.create(Settings(data_dir=tmp_path / "data", providers="CPUExecutionProvider",
                                             warmup=False))
    try:
        job = submit(context.store, context.settings.data_dir, "mri-adps", [(brain, "brain.h5", "fastmri")],
                     params={"steps": 2, "samples": 2}, study={"PatientID": "P7", "StudyID": "S7"})
        seen = []
        result = run_job(context.settings, job, lambda fraction, step: seen.append(step))
    finally:
        context.engine.dispose()
    # 4 sampler steps (2 slices x 2 steps, both draws in one batch), then the report's baseline on the 2 slices
    assert any("reconstructing step 4/6" in s for s in seen) and "reconstructing step 6/6" in seen, seen
    prov = result["provenance"]
    assert prov["pipeline"] == "mri-adps" and prov["model_id"] == AMBIENT
    assert prov["engine_provider"] == "onnxruntime:CPUExecutionProvider" and prov["parameters"]["mode"] == "fast"
    files = result["files"]
    assert {"dicom", "nifti", "uncertainty", "uncertainty-dicom"} <= set(files)
    data_dir = context.settings.data_dir
    images, maps = _series(data_dir, files["dicom"]), _series(data_dir, files["uncertainty-dicom"])
    assert len(images) == len(maps) == 2 and maps[0].Modality == "MR"
    image, unc = images[0], maps[0]
    assert image.StudyInstanceUID == unc.StudyInstanceUID and unc.PatientID == "P7" and unc.StudyID == "S7"
    assert image.FrameOfReferenceUID == unc.FrameOfReferenceUID
    assert image.SeriesInstanceUID != unc.SeriesInstanceUID and int(unc.SeriesNumber) != int(image.SeriesNumber)
    assert unc.SeriesDescription == "Uncertainty map (standard deviation) of mri-adps"
    assert "standard deviation over 2 fast A-DPS draws" in unc.DerivationDescription
    assert max(int(ds.pixel_array.max()) for ds in maps) > 0
    assert_no_errors(sorted((data_dir / "results" / job.id / "dicom-uncertainty").glob("*.dcm")))


def test_http_serves_the_uncertainty_series(tmp_path, tmp_path_factory, brain):
    """A real ``recon serve`` on loopback: an mri-adps job lists and serves both uncertainty results; one draw has
    none and says why."""
    from recon_service.client import ApiError
    from recon_service.local_server import LocalServer

    env = {"RECON_WORKER_THREADS": "1", "OMP_NUM_THREADS": "1", "RECON_PROVIDERS": "CPUExecutionProvider"}
    with LocalServer(tmp_path_factory.mktemp("service") / "data", workers=1, env=env) as srv, srv.client() as client:
        two = client.wait(client.submit([brain], "mri-adps", params={"steps": 2, "samples": 2})["id"], timeout=300)
        one = client.wait(client.submit([brain], "mri-adps", params={"steps": 2, "samples": 1})["id"], timeout=300)
        assert two["state"] == "succeeded" and one["state"] == "succeeded", (two, one)
        assert {"uncertainty", "uncertainty-dicom"} <= set(two["results"])
        assert "uncertainty-dicom" not in one["results"]
        maps = client.download(two["id"], "uncertainty-dicom", tmp_path / "u.zip")
        images = client.download(two["id"], "dicom", tmp_path / "i.zip")
        study = {_series(tmp_path, p.name)[0].StudyInstanceUID for p in (maps, images)}
        assert len(study) == 1
        with pytest.raises(ApiError, match="samples > 1"):
            client.download(one["id"], "uncertainty-dicom", tmp_path / "none.zip")
