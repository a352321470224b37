"""The CT consistency report (pipelines.confidence_ct): the residual is 1 for a volume that explains its data down to
the Poisson noise, the angular undersampling follows views and arc, and the verdict follows the card's thresholds
for the sampler settings they were calibrated with."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.physics.ct.geometry import parallel_beam
from models.physics.ct.projector import CTProjector
from pipelines.confidence import consistency_summary
from pipelines.confidence_ct import angular_undersampling, ct_consistency_report, data_residuals
from pipelines.ct_units import MU_WATER
from pipelines.data import CTAcquisition
from pipelines.pipeline import reconstruct

pytestmark = pytest.mark.usefixtures("single_thread")


def _disc_volume(size: int, slices: int) -> np.ndarray:
    """A water disc with a denser insert, (slices, size, size) in 1/mm."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    body = (np.hypot(yy, xx) < 0.4 * size) * MU_WATER
    insert = (np.hypot(yy - 3, xx + 4) < 0.1 * size) * 0.5 * MU_WATER
    return np.repeat((body + insert)[None], slices, axis=0).astype(np.float32)


def _acquisition(views: int, i0: float | None, arc: float = 180.0, seed: int = 0) -> CTAcquisition:
    """``y = A mu + e`` with ``e_i ~ N(0, exp(y_i) / I0)``, the post-log Poisson law the report assumes."""
    geom = parallel_beam(32, views, arc, pixel_size=2.0)
    mu = _disc_volume(32, 2)
    clean = CTProjector(geom).forward(torch.from_numpy(mu)).numpy()
    sino = clean
    if i0 is not None:
        sd = np.exp(np.clip(clean, 0, None) / 2) / math.sqrt(i0)
        sino = clean + np.random.default_rng(seed).normal(size=clean.shape) * sd
    attrs = {"attenuation_units": "1/mm", "mu_water_per_mm": MU_WATER, **({"noise_i0": i0} if i0 else {})}
    return CTAcquisition(sino.astype(np.float32), np.asarray(geom.angles_array()), geom.to_dict(), mu,
                         np.diag([2.0, 2.0, 2.0, 1.0]), attrs)


def test_residual_is_one_for_the_truth_and_grows_with_a_wrong_volume():
    acq = _acquisition(90, 1e4)
    geom = parallel_beam(32, 90, 180.0, pixel_size=2.0)
    truth = data_residuals(acq, acq.reference, geom)
    assert truth["noise"] == {"s0": pytest.approx(0.01), "source": "photon count I0"}
    assert 0.95 < truth["residual_network"] <= truth["residual_network_max"] < 1.05  # 90 x 45 rays per slice
    wrong = data_residuals(acq, 1.1 * acq.reference, geom)  # 10% too dense
    assert wrong["residual_network"] > 3 * truth["residual_network"]
    # without a stated I0 the noise comes from the sinogram's detail in the air around the disc
    unstated = CTAcquisition(acq.sinogram, acq.angles, acq.geometry, acq.reference, acq.affine,
                             {"attenuation_units": "1/mm"})
    from_data = data_residuals(unstated, acq.reference, geom)
    assert from_data["noise"]["source"] == "sinogram detail (MAD)"
    assert from_data["residual_network"] == pytest.approx(truth["residual_network"], rel=0.15)
    # noise-free data with air around the object: no noise level, so no residual figure, and the report says why
    noise_free = data_residuals(_acquisition(90, None), acq.reference, geom)
    assert "residual_network" not in noise_free and noise_free["noise"]["s0"] == 0.0
    assert "the noise level from the sinogram detail (MAD) is zero" in noise_free["residual_unjudged"]


@pytest.mark.parametrize("views, arc, expected", [
    (8, 180.0, math.pi / 2 * 46 / 8),        # 46 detectors for a 32-pixel grid
    (2, 180.0, math.pi / 2 * 46 / 2),
    (60, 120.0, math.pi / 2 * 46 / 60 * 1.5),
    (45, 90.0, math.pi / 2 * 46 / 45 * 2.0),
])
def test_angular_undersampling_follows_views_and_arc(views, arc, expected):
    geom = parallel_beam(32, views, arc, pixel_size=2.0)
    assert geom.num_detectors == 46
    assert angular_undersampling(geom) == pytest.approx(expected)


SAMPLER = {"mode": "dds", "steps": 50}


def _card(residual: float, disagreement: float) -> dict:
    return {"ood": {"thresholds": {"residual": residual, "disagreement": [[10.0, disagreement], [100.0, disagreement]]},
                    "sampler": SAMPLER}}


def test_verdict_follows_the_thresholds_for_the_calibrated_sampler():
    acq = _acquisition(16, 1e5)
    geom = parallel_beam(32, 16, 180.0, pixel_size=2.0)
    baseline = reconstruct(acq, "admm-tv").volume.data
    agreeing = ct_consistency_report(acq, baseline, geom, _card(5.0, 0.05), sampler=SAMPLER)
    assert agreeing["disagreement"] < 1e-6 and agreeing["baseline"] == "admm-tv"
    assert agreeing["calibrated"] and not agreeing["flagged"] and agreeing["reasons"] == []
    assert agreeing["acceleration"] == pytest.approx(math.pi / 2 * 46 / 16)

    halved = ct_consistency_report(acq, 0.5 * baseline, geom, _card(5.0, 0.05), sampler=SAMPLER)
    assert halved["disagreement"] == pytest.approx(0.5, abs=1e-6) and halved["flagged"]
    assert any("disagrees with the classical admm-tv reconstruction by 50.0%" in r for r in halved["reasons"])
    assert any("contradicts its own data" in r for r in halved["reasons"])  # half the attenuation: far off

    other = ct_consistency_report(acq, 0.5 * baseline, geom, _card(5.0, 0.05), sampler={**SAMPLER, "steps": 10})
    assert not other["calibrated"] and not other["flagged"]
    assert "calibrated for other sampler settings (steps=50, not 10)" in other["note"]
    # a fit that cannot be judged is a reason to look, though the image agrees with ADMM-TV
    noise_free = _acquisition(16, None)
    unjudged = ct_consistency_report(noise_free, reconstruct(noise_free, "admm-tv").volume.data, geom,
                                     _card(5.0, 0.05), sampler=SAMPLER)
    assert unjudged["disagreement"] < 1e-6 and unjudged["flagged"]
    assert unjudged["reasons"] == [unjudged["residual_unjudged"]]
    assert "no data residual (the data have no measurable noise)" in consistency_summary(unjudged)
    never = ct_consistency_report(acq, baseline, geom, {}, sampler=SAMPLER)
    assert not never["calibrated"]
    assert never["note"] == "no out-of-distribution thresholds are calibrated for this model"
