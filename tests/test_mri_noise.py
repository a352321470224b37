"""The k-space noise estimate and the weights the classical MRI methods choose from it."""

import numpy as np
import pytest
import torch

from models.classical.noise_rules import ITERATION_RULES, MATRIX_RANGE, R_RANGE, R_RATIO_RANGE, RULES, NoiseRule
from models.physics.mri.fft import fft2c
from models.physics.mri.masks import make_mask
from models.physics.mri.noise import corner_sigma, estimate_kspace_sigma, noise_scan_sigma, readout_edge_sigma
from pipelines.data import MRIAcquisition
from pipelines.reconstructors import get
from pipelines.simulate.mri import MRISimulationConfig, simulate_slab, slab_starts


def _phantom_kspace(sigma: float, coils: int = 4, size: int = 96, seed: int = 0) -> np.ndarray:
    """An ellipse that fills 60 % of the field of view, smooth coil profiles, complex noise with E|n|^2 = sigma^2."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    image = ((x / 0.6) ** 2 + (y / 0.5) ** 2 <= 1).astype(np.float32) * (1 + 0.5 * np.cos(4 * x))
    profiles = np.stack([np.exp(-((x - np.cos(a)) ** 2 + (y - np.sin(a)) ** 2)) for a in
                         np.linspace(0, 2 * np.pi, coils, endpoint=False)])
    kspace = fft2c(torch.from_numpy((profiles * image).astype(np.complex64))).numpy()
    noise = rng.standard_normal(kspace.shape) + 1j * rng.standard_normal(kspace.shape)
    return (kspace + sigma / np.sqrt(2) * noise).astype(np.complex64)


@pytest.mark.parametrize("sigma", [0.3, 0.03, 0.003])
@pytest.mark.parametrize("acceleration", [1, 4, 8])
def test_noise_estimate_within_ten_percent(sigma, acceleration):
    kspace = _phantom_kspace(sigma)
    mask = make_mask("random", kspace.shape[-2:], acceleration, 0.08, seed=1).mask if acceleration > 1 else \
        np.ones((1, kspace.shape[-1]), np.float32)
    assert estimate_kspace_sigma(kspace * mask, mask) == pytest.approx(sigma, rel=0.1)


def test_each_region_overestimates_only_where_signal_leaks_in():
    """Without noise the corners still see signal; the readout FOV edges (air) see none: the minimum is kept."""
    kspace = _phantom_kspace(0.0)
    sampled = np.ones(kspace.shape[-2:], bool)
    assert corner_sigma(kspace, sampled) > 1e-4
    assert readout_edge_sigma(kspace, sampled.all(0)) < 1e-5
    assert estimate_kspace_sigma(kspace, sampled) < 1e-5


def test_noise_scan_level_scales_with_the_dwell_time_ratio():
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal((4, 20000)) + 1j * rng.standard_normal((4, 20000))) * 0.1 / np.sqrt(2)
    assert noise_scan_sigma(noise) == pytest.approx(0.1, rel=0.02)
    # noise sampled at a 4x longer dwell (4x narrower bandwidth) than the imaging readouts: 4x less variance
    assert noise_scan_sigma(noise, noise_dwell_us=20.0, imaging_dwell_us=5.0) == pytest.approx(0.2, rel=0.02)


def test_rule_is_a_clamped_power_law():
    rule = NoiseRule(c0=np.log(0.1), c1=1.0, c2=-0.5, c3=1.0, c4=0.0, low=1e-3, high=0.05)
    assert rule.lam(0.05, 4, 256) == pytest.approx(0.1 * 0.05 / 2)
    assert rule.lam(0.05, 4, 128) == pytest.approx(0.1 * 0.05 / 2 / 2)
    assert rule.lam(0.05, 4, 32) == rule.lam(0.05, 4, MATRIX_RANGE[0])
    assert rule.lam(0.05, 9, 256) == pytest.approx(0.1 * 0.05 / 3)
    assert rule.lam(0.01, 4, 256) == pytest.approx(1e-3)  # 5e-4 raised to the lower clip
    assert NoiseRule(np.log(10.0), 1.0, -0.5, 1.0, 0.0, 1e-3, 0.05).lam(0.08, 4, 256) == pytest.approx(0.05)
    # outside the fitted ranges of sigma/s and R the rule is held at their ends, not extrapolated
    assert rule.lam(0.5, 4, 256) == rule.lam(R_RATIO_RANGE[1], 4, 256)
    assert rule.lam(0.0, 4, 256) == rule.lam(R_RATIO_RANGE[0], 4, 256)
    assert rule.lam(0.05, 2, 256) == rule.lam(0.05, R_RANGE[0], 256)
    interaction = NoiseRule(0.0, 1.0, 0.0, 0.0, -0.5, 1e-9, 1.0)  # exponent of r: 1 - 0.5 log R
    assert interaction.lam(0.05, 4, 256) == pytest.approx(0.05 ** (1 - 0.5 * np.log(4)))


@pytest.mark.parametrize("name", ["l1-wavelet", "cg-sense", "admm-tv"])
def test_fitted_rules_take_a_larger_weight_for_more_noise(name):
    for acceleration in (4, 6, 8):
        for matrix in (128, 256, 320):
            low, high = RULES[name].lam(0.008, acceleration, matrix), RULES[name].lam(0.08, acceleration, matrix)
            assert high > 2 * low, (acceleration, matrix)


def _slab(snr_db: float) -> MRIAcquisition:
    cfg = MRISimulationConfig(size=64, coils=4, slices=1, snr_db=snr_db, seed=3)
    return simulate_slab("t1", "axial", slab_starts("axial", "val", cfg)[0], 4.0, cfg, seed=3)


@pytest.mark.parametrize("method", ["l1-wavelet", "cg-sense", "admm-tv-2d"])
def test_left_out_weight_is_chosen_from_the_noise_and_reported(method):
    m = get("mri", method)
    noisy, clean = _slab(20.0), _slab(40.0)
    chosen = [m.run(acq, m.check({}), None).attrs["chosen"] for acq in (noisy, clean)]
    for acq, report in zip((noisy, clean), chosen, strict=True):
        assert report["noise"]["sigma"] == pytest.approx(acq.attrs["noise_sigma"], rel=0.1)
        assert report["lam"] == pytest.approx(RULES[method.removesuffix("-2d")].lam(
            report["noise_to_signal"], report["acceleration"], report["matrix"]), rel=1e-6)
        assert report["matrix"] == 64 and 3 < report["acceleration"] < 6
    assert chosen[0]["noise_to_signal"] > 5 * chosen[1]["noise_to_signal"]  # 20 dB apart: 10x in amplitude
    given = m.run(noisy, m.check({"lam": 0.01}), None)
    assert "lam" not in given.attrs.get("chosen", {}) and given.attrs["params"]["lam"] == 0.01


def test_left_out_iteration_count_of_l1_wavelet_is_chosen_from_the_noise_and_reported():
    m = get("mri", "l1-wavelet")
    rule = ITERATION_RULES["l1-wavelet"]
    noisy, clean = _slab(20.0), _slab(40.0)
    chosen = [m.run(acq, m.check({}), None).attrs["chosen"] for acq in (noisy, clean)]
    for report in chosen:
        assert report["max_iter"] == rule.iterations(report["noise_to_signal"], report["acceleration"])
        assert report["max_iter"] in rule.choices and "log n" in report["iteration_rule"]
    assert chosen[0]["max_iter"] < chosen[1]["max_iter"]  # more noise: fewer iterations (early stopping)
    given = m.run(noisy, m.check({"max_iter": 7}), None)
    assert "max_iter" not in given.attrs["chosen"] and given.attrs["params"]["max_iter"] == 7


def test_noise_scan_is_preferred_to_the_estimate():
    m = get("mri", "l1-wavelet")
    acq = _slab(30.0)
    acq.attrs["noise_scan_sigma"] = 2 * acq.attrs["noise_sigma"]
    report = m.run(acq, m.check({}), None).attrs["chosen"]
    assert report["noise"] == {"sigma": acq.attrs["noise_scan_sigma"], "source": "noise scan"}


def test_shipped_rules_are_the_committed_fit():
    """The constants in models/classical/noise_rules.py are the ones benchmarks/mri_tune_defaults.py fitted, and the
    ranges the rule is held inside are the ranges of the tuning cases."""
    import json
    from pathlib import Path

    fit = json.loads((Path(__file__).parents[1] / "benchmarks/results/mri_default_rule.json").read_text())["methods"]
    for name, key in (("l1-wavelet", "l1-wavelet"), ("cg-sense", "cg-sense"), ("admm-tv", "admm-tv-2d")):
        for i in range(5):
            assert getattr(RULES[name], f"c{i}") == pytest.approx(fit[key]["rule"][f"c{i}"], abs=1e-4), (name, i)
        rows = fit[key]["rows"]
        ratios = [row["r"] for row in rows]
        accelerations = [row["acceleration_sampled"] for row in rows]
        assert R_RATIO_RANGE[0] <= min(ratios) * 1.05 and max(ratios) <= R_RATIO_RANGE[1] * 1.05
        assert R_RANGE[0] <= min(accelerations) and max(accelerations) <= R_RANGE[1]
        assert {row["size"] for row in rows} == set(MATRIX_RANGE)
    iteration_fit = fit["l1-wavelet"]["iteration_rule"]
    for i in range(3):
        assert getattr(ITERATION_RULES["l1-wavelet"], f"d{i}") == pytest.approx(iteration_fit[f"d{i}"], abs=1e-4), i
    assert list(ITERATION_RULES["l1-wavelet"].choices) == iteration_fit["choices"]
