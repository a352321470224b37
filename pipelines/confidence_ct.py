"""The consistency report that comes with every DDS CT volume, and its out-of-distribution flag.

The checks of the MRI report (``pipelines.confidence``), on the CT operator:

* against its own data: the normalised residual of each slice, ``rho = sqrt(mean_i ((A mu - y)_i / sd_i)^2)`` over
  its rays, with ``sd_i = s0 exp(y_i / 2)`` the post-log Poisson standard deviation of ray ``i``
  (``models.physics.ct.noise``: ``s0 = 1 / sqrt(I0)`` from the stated photon count, else from the sinogram's
  detail). About 1 when the volume explains the data down to the noise; a few views leave fewer rays than pixels,
  so a sound volume may fit below 1, and one that contradicts its data lies above;
* against a classical reconstruction computed beside it (``BASELINE``: 3D ADMM-TV at its noise-adaptive
  defaults): the relative disagreement ``||mu - mu_c|| / ||mu_c||`` over the volume;
* with more than one draw, the uncertainty map's summary;
* the pixel size, against the scale the prior was trained at (its card's pixel size, widened by the training's
  random scaling, ``training_pixel_range``): a 2D prior sees anatomy at the size it learned it.

The report's ``acceleration`` is the angular undersampling: the views a scan over 180 degrees at the detector's
Nyquist rate takes (``pi / 2`` x detectors), over the views measured, times ``180 / arc`` for a shorter arc. The
thresholds (``pipelines.confidence.FlagThresholds``) are calibrated on the prior's tuning slab and the untrained gaps
below and above its test slab by ``benchmarks/ct_ood_calibrate.py`` and kept in the prior's card for the sampler
settings they were calibrated with.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from models.physics.ct.noise import detail_s0, stated_i0
from pipelines.confidence import disagreement, judged, uncertainty_summary
from pipelines.data import CTAcquisition

if TYPE_CHECKING:
    from models.physics.ct.geometry import Geometry
    from pipelines.reconstructors import Progress

BASELINE = "admm-tv"


def angular_undersampling(geom: Geometry) -> float:
    """``(pi / 2 x detectors / views) x (180 degrees / arc)``, the arc (at most 180 degrees) being the angles' span
    plus one step."""
    angles = np.asarray(geom.angles_array(), dtype=np.float64)
    arc = math.pi
    if angles.size > 1:
        arc = min(float(np.ptp(angles)) + float(np.median(np.abs(np.diff(angles)))), math.pi)
    return (math.pi / 2 * geom.num_detectors / angles.size) * (math.pi / arc)


def training_pixel_range(card: dict[str, Any]) -> tuple[float, float]:
    """The pixel sizes a CT prior's training slices spanned: its ``image.pixel_mm`` over ``1 +- scale`` of the
    training's random scaling (``pipelines.simulate.prior_slices.Augment``)."""
    from pipelines.simulate.prior_slices import Augment

    pixel, scale = float(card["image"]["pixel_mm"]), Augment().scale
    return pixel / (1 + scale), pixel / (1 - scale)


def noise_s0(acq: CTAcquisition) -> tuple[float, str]:
    """The noise scale ``s0`` of the sinogram's rays and where it came from."""
    i0 = stated_i0(acq.attrs)
    if i0 is not None:
        return 1.0 / math.sqrt(i0), "photon count I0"
    return detail_s0(acq.sinogram), "sinogram detail (MAD)"


def data_residuals(acq: CTAcquisition, mu: np.ndarray, geom: Geometry) -> dict[str, Any]:
    """Per-slice normalised residuals of the volume ``mu`` (module docstring): median and largest. When the
    sinogram holds no measurable noise (a noise-free simulation) there is nothing to normalise by, and
    ``residual_unjudged`` says so instead: a calibrated flag counts a fit it cannot judge as a reason
    (``pipelines.confidence.FlagThresholds``)."""
    from models.physics.ct.projector import CTProjector

    s0, source = noise_s0(acq)
    if not s0 > 0:
        return {"noise": {"s0": 0.0, "source": source},
                "residual_unjudged": f"its fit to the data cannot be judged: the noise level from the {source} is "
                                     "zero, and every real scan has noise"}
    y = torch.from_numpy(np.ascontiguousarray(acq.sinogram, dtype=np.float32))
    with torch.no_grad():
        predicted = CTProjector(geom).forward(torch.from_numpy(np.ascontiguousarray(mu, dtype=np.float32)))
    sd = s0 * torch.exp(torch.clamp(y, 0.0, 50.0) / 2)
    rho = torch.sqrt(torch.mean(((predicted - y) / sd) ** 2, dim=(1, 2))).numpy().astype(np.float64)
    return {"residual_network": float(np.median(rho)), "residual_network_max": float(rho.max()),
            "noise": {"s0": s0, "source": source}}


def baseline_volume(acq: CTAcquisition, progress: Progress | None = None) -> np.ndarray:
    """The classical reconstruction the report compares with, at its defaults."""
    from pipelines.reconstructors import get

    method = get("ct", BASELINE)
    return method.run(acq, method.check(None), progress).data


def ct_consistency_report(acq: CTAcquisition, mu: np.ndarray, geom: Geometry, card: dict[str, Any],
                          std: np.ndarray | None = None, progress: Progress | None = None,
                          sampler: dict[str, Any] | None = None,
                          baseline: np.ndarray | None = None) -> dict[str, Any]:
    """The report of a DDS volume ``mu`` (attenuation units) of ``acq``: residuals, disagreement with
    ``BASELINE``, the uncertainty summary when ``std`` is given, and the verdict of the card's thresholds for the
    ``sampler`` settings (``pipelines.confidence.judged``). ``progress(done, total)`` counts the baseline's
    iterations; ``baseline``: the ``BASELINE`` volume when the caller has it already (a warm-started DDS)."""
    report: dict[str, Any] = {**data_residuals(acq, mu, geom), "mode": "none", "expected_residual": 1.0,
                              "baseline": BASELINE, "acceleration": angular_undersampling(geom),
                              "pixel_mm": float(geom.pixel_size)}
    report["disagreement"] = disagreement(mu, baseline if baseline is not None else baseline_volume(acq, progress))
    if std is not None:
        report["uncertainty"] = uncertainty_summary(mu, std)
    return judged(report, card, sampler)
