"""The consistency report that comes with every learned MRI image, and its out-of-distribution flag.

A learned image is checked three ways:

* against its own data: the network image's normalised residual ``rho = ||A x - y|| / (sigma sqrt(m))`` on the
  measured samples (about 1 when it explains the data down to the noise; ``pipelines.learned.DataConsistency``),
  per slice, with the largest over the volume;
* against a classical reconstruction computed beside it (``BASELINE``, at its noise-adaptive defaults): the
  relative disagreement ``||(|x| - |x_c|)|| / ||x_c||`` of the magnitudes over the volume;
* for the diffusion methods, by their own spread: the uncertainty map's mean and 99th percentile over the object,
  relative to the image's 99th percentile.

The flag compares the report with thresholds calibrated per model on the simulated brain's validation slabs (all
three planes, random and equispaced masks) and stored in the model's card (``card["ood"]``, written by
``benchmarks/mri_ood_calibrate.py`` with the false-flag rates it measured on the held-out sets). A model without
calibrated thresholds is reported as not calibrated, never as in distribution.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.data import MRIAcquisition

if TYPE_CHECKING:
    from pipelines.reconstructors import Progress

BASELINE = "l1-wavelet"
FLAG_NOTE = "[OUT OF DISTRIBUTION]"  # heads the SeriesDescription of a flagged image
DICOM_LT = 10240  # ImageComments is LT: at most 10240 characters


def disagreement(image: np.ndarray, baseline: np.ndarray) -> float:
    """``||(|x| - |x_c|)|| / ||x_c||`` over the whole volume (0 when they agree)."""
    a, b = np.abs(image).astype(np.float64), np.abs(baseline).astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def uncertainty_summary(image: np.ndarray, std: np.ndarray) -> dict[str, float]:
    """The uncertainty map's mean and 99th percentile over the object (``|x|`` above 10% of its 99th
    percentile), relative to that percentile."""
    magnitude = np.abs(image)
    scale = float(np.quantile(magnitude, 0.99)) or 1.0
    obj = magnitude > 0.1 * scale
    values = np.abs(std)[obj] if obj.any() else np.abs(std).ravel()
    return {"mean": float(values.mean() / scale), "p99": float(np.quantile(values, 0.99) / scale)}


Polyline = tuple[tuple[float, float], ...]  # (acceleration, limit) points, sorted by acceleration


def along(points: Polyline, acceleration: float) -> float:
    """The limit at ``acceleration`` on the polyline through ``points``: linear between them, extended along the end
    segments beyond them on both sides, and never below a third of the first point's limit."""
    k = 0  # the segment that holds the acceleration, or the end segment beyond it
    while k + 2 < len(points) and acceleration > points[k + 1][0]:
        k += 1
    (r0, d0), (r1, d1) = points[k], points[min(k + 1, len(points) - 1)]
    slope = (d1 - d0) / (r1 - r0) if r1 != r0 else 0.0
    return max(d0 + slope * (acceleration - r0), points[0][1] / 3)


@dataclass(frozen=True)
class FlagThresholds:
    """What makes a learned image out of distribution: a network residual above ``residual`` (one limit, or for a
    method whose fit to the data loosens with the undersampling, a polyline of ``[acceleration, limit]`` points,
    read as ``disagreement``'s is), or no residual where the report says why it could not judge the fit to the data
    (``residual_unjudged``); or a disagreement above the polyline through ``disagreement``'s ``[acceleration,
    limit]`` points (a classical reconstruction is worse at higher accelerations, so it may disagree more with a
    sound network; ``along``); or, for a diffusion method, an uncertainty mean above ``uncertainty``; or for a prior
    trained at one scale, pixels outside the ``pixel_mm`` range it learned."""

    residual: float | Polyline
    disagreement: Polyline
    uncertainty: float | None = None  # diffusion methods: the largest in-distribution uncertainty mean
    pixel_mm: tuple[float, float] | None = None  # CT prior: the pixel sizes its training slices spanned

    def residual_at(self, acceleration: float | None) -> float:
        """The residual limit at ``acceleration`` (without one, a polyline's largest limit)."""
        if isinstance(self.residual, float | int):
            return float(self.residual)
        if acceleration is None:
            return max(limit for _, limit in self.residual)
        return along(self.residual, acceleration)

    def disagreement_at(self, acceleration: float) -> float:
        return along(self.disagreement, acceleration)

    def reasons(self, report: dict[str, Any]) -> list[str]:
        out = []
        rho, acceleration = report.get("residual_network_max"), report.get("acceleration")
        if rho is not None and rho > (most := self.residual_at(acceleration)):
            at = "" if isinstance(self.residual, float | int) or acceleration is None else f" at {acceleration:.1f}x"
            out.append(f"the network image contradicts its own data: residual {rho:.2f} x the noise level "
                       f"(in distribution at most {most:.2f}{at})")
        elif rho is None and report.get("residual_unjudged"):  # the report could not make its check on the data
            out.append(report["residual_unjudged"])
        d = report.get("disagreement")
        if d is not None and acceleration is not None and d > (limit := self.disagreement_at(acceleration)):
            out.append(f"it disagrees with the classical {report.get('baseline', BASELINE)} reconstruction by "
                       f"{100 * d:.1f}% (in distribution at most {100 * limit:.1f}% at {acceleration:.1f}x)")
        spread = (report.get("uncertainty") or {}).get("mean")
        if self.uncertainty is not None and spread is not None and spread > self.uncertainty:
            out.append(f"its draws disagree: uncertainty mean {100 * spread:.2f}% of the image scale (in "
                       f"distribution at most {100 * self.uncertainty:.2f}%)")
        pixel = report.get("pixel_mm")
        if self.pixel_mm is not None and pixel is not None and not self.pixel_mm[0] <= pixel <= self.pixel_mm[1]:
            out.append(f"its pixels ({pixel:.2f} mm) are outside the scale the prior was trained at "
                       f"({self.pixel_mm[0]:.2f}-{self.pixel_mm[1]:.2f} mm, in distribution)")
        return out

    def to_dict(self) -> dict[str, Any]:
        residual = self.residual if isinstance(self.residual, float | int) else [list(p) for p in self.residual]
        out: dict[str, Any] = {"residual": residual, "disagreement": [list(p) for p in self.disagreement]}
        if self.uncertainty is not None:
            out["uncertainty"] = self.uncertainty
        if self.pixel_mm is not None:
            out["pixel_mm"] = list(self.pixel_mm)
        return out


def calibrate(rows: list[dict[str, Any]], margin: float, pixel_mm: tuple[float, float] | None = None,
              residual_by_acceleration: bool = False) -> FlagThresholds:
    """Thresholds from in-distribution reports: ``margin`` x the largest network residual (``residual_network_max``),
    ``margin`` x the largest ``disagreement`` of each ``nominal`` group placed at the group's mean ``acceleration``,
    and for a diffusion method ``margin`` x the largest uncertainty mean; ``pixel_mm`` as given. With
    ``residual_by_acceleration`` the residual limit is a polyline too: at each group's point, ``margin`` x the largest
    residual of that group and of every group less undersampled (a sparser acquisition leaves more to the prior, so
    the limit never falls as the undersampling grows)."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["nominal"], []).append(row)
    placed = sorted(((statistics.fmean(r["acceleration"] for r in g), g) for g in groups.values()),
                    key=lambda p: p[0])
    points = tuple((a, margin * max(r["disagreement"] for r in g)) for a, g in placed)
    residual: float | Polyline = margin * max(r["residual_network_max"] for r in rows)
    if residual_by_acceleration:
        largest, limits = 0.0, []
        for a, g in placed:
            largest = max(largest, *(r["residual_network_max"] for r in g))
            limits.append((a, margin * largest))
        residual = tuple(limits)
    spreads = [r["uncertainty"]["mean"] for r in rows if "uncertainty" in r]
    return FlagThresholds(residual, points, margin * max(spreads) if spreads else None, pixel_mm)


def calibrated_sampler(card: dict[str, Any]) -> dict[str, Any]:
    """The sampler settings a diffusion prior's thresholds were calibrated with (``card["ood"]["sampler"]``: mode,
    steps, draws, data-consistency weights); empty for a network, whose image has no sampler settings."""
    return dict((card.get("ood") or {}).get("sampler") or {})


def sampler_differences(card: dict[str, Any], sampler: dict[str, Any] | None) -> list[str]:
    """The calibrated sampler settings that the run's ``sampler`` does not share, as ``"name=calibrated, not ran"``."""
    if sampler is None:
        return []
    return [f"{k}={v}, not {sampler.get(k)}" for k, v in calibrated_sampler(card).items() if sampler.get(k) != v]


def thresholds_of(card: dict[str, Any], sampler: dict[str, Any] | None = None) -> FlagThresholds | None:
    """The card's calibrated thresholds (None when the model was never calibrated, or, for a diffusion prior, when
    the run's ``sampler`` settings differ from those they were calibrated with: the spread of the draws, the fit to
    the data and so the report's figures all move with the sampler's mode, steps, draws and weights)."""
    ood = card.get("ood") or {}
    limits = ood.get("thresholds")
    if not limits or sampler_differences(card, sampler):
        return None
    spread, pixel, residual = limits.get("uncertainty"), limits.get("pixel_mm"), limits["residual"]
    return FlagThresholds(float(residual) if isinstance(residual, float | int) else
                          tuple((float(r), float(d)) for r, d in residual),
                          tuple((float(r), float(d)) for r, d in limits["disagreement"]),
                          None if spread is None else float(spread),
                          None if pixel is None else (float(pixel[0]), float(pixel[1])))


def baseline_image(acq: MRIAcquisition, progress: Progress | None = None) -> np.ndarray:
    """The classical reconstruction the report compares with (complex, the recon matrix): at its defaults, or with
    ACS maps where ESPIRiT cannot calibrate (fewer calibration lines than its kernel is wide). ``ValueError``
    when neither runs. ``progress(done, total)`` counts its slices."""
    from pipelines.reconstructors import get

    method = get("mri", BASELINE)
    try:
        return method.run(acq, method.check(None), progress).data
    except ValueError:
        return method.run(acq, method.check({"maps": "acs"}), progress).data


def measured_residuals(acq: MRIAcquisition, image: np.ndarray) -> dict[str, float]:
    """The data residual of a volume (slices, h, w) that a method made without ``DataConsistency`` (the diffusion
    methods): per slice with the learned methods' ACS maps, median and largest. Empty when the image does not
    cover the k-space field of view (readout oversampling)."""
    import torch

    from pipelines.learned import DataConsistency, collate, prepare_input
    from pipelines.methods._mri import acquisition_noise
    from pipelines.sampling import acquisition_mask

    if image.shape[-2:] != acq.kspace.shape[-2:]:
        return {}
    mask, num_low = acquisition_mask(acq)
    noise = acquisition_noise(acq, mask)
    step = DataConsistency(noise["sigma"], "off", noise_source=noise["source"])
    for s in range(acq.num_slices):
        inputs = collate([prepare_input(acq.kspace[s], mask, num_low)])
        step.apply(torch.view_as_real(torch.from_numpy(np.ascontiguousarray(image[s], np.complex64)))[None], inputs)
    return {**step.report(), "mode": "none"}


def consistency_report(acq: MRIAcquisition, image: np.ndarray, measured: dict[str, float],
                       card: dict[str, Any], std: np.ndarray | None = None,
                       progress: Progress | None = None, sampler: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report of a learned image ``image`` of ``acq``: ``measured`` is the consistency step's
    (``DataConsistency.report()``, with ``mode`` and ``noise``), ``std`` the diffusion methods' uncertainty map;
    ``progress(done, total)`` counts the baseline's slices; ``sampler`` the settings a diffusion method ran with,
    kept in the report (its thresholds hold for the settings they were calibrated with, ``calibrated_sampler``)."""
    from pipelines.sampling import acquisition_mask, sampled_acceleration

    mask, _ = acquisition_mask(acq)
    report: dict[str, Any] = {**measured, "expected_residual": 1.0, "baseline": BASELINE,
                              "acceleration": sampled_acceleration(mask, acq.kspace.shape[-2:])}
    try:
        report["disagreement"] = disagreement(image, baseline_image(acq, progress))
    except ValueError as err:  # the image stands; only this check is missing, and the report says why
        report["disagreement"] = None
        report["baseline_error"] = str(err)
    if std is not None:
        report["uncertainty"] = uncertainty_summary(image, std)
    return judged(report, card, sampler)


def judged(report: dict[str, Any], card: dict[str, Any], sampler: dict[str, Any] | None = None) -> dict[str, Any]:
    """``report`` with the card's verdict: ``calibrated``, ``flagged`` and ``reasons`` (with the ``thresholds``), or
    a ``note`` saying why no thresholds apply (never calibrated, or calibrated for other ``sampler`` settings,
    which the report keeps)."""
    if sampler is not None:
        report["sampler"] = sampler
    limits = thresholds_of(card, sampler)
    if limits is None:
        differences = sampler_differences(card, sampler) if (card.get("ood") or {}).get("thresholds") else []
        note = ("the out-of-distribution thresholds of this model are calibrated for other sampler settings ("
                + "; ".join(differences) + ")" if differences else
                "no out-of-distribution thresholds are calibrated for this model")
        report.update(calibrated=False, flagged=False, reasons=[], note=note)
        if differences:
            report["calibrated_sampler"] = calibrated_sampler(card)
    else:
        reasons = limits.reasons(report)
        report.update(calibrated=True, thresholds=limits.to_dict(), flagged=bool(reasons), reasons=reasons)
    return report


def consistency_summary(report: dict[str, Any]) -> str:
    """The report in one line (DICOM ImageComments, logs)."""
    parts = []
    if "residual_network" in report:
        parts.append(f"data residual {report['residual_network']:.2f} x noise (expected "
                     f"{report['expected_residual']:.0f})")
    elif "residual_unjudged" in report:
        parts.append("no data residual (the data have no measurable noise)")
    if "residual" in report:
        parts.append(f"after the consistency step ({report['mode']}) {report['residual']:.2f}")
    if report.get("disagreement") is not None:
        parts.append(f"disagreement with {report['baseline']} {100 * report['disagreement']:.1f}%")
    else:
        parts.append(f"no {report['baseline']} comparison ({report.get('baseline_error')})")
    if "uncertainty" in report:
        parts.append(f"uncertainty mean {100 * report['uncertainty']['mean']:.1f}% of the image scale")
    if not report.get("calibrated"):
        what = "these sampler settings" if report.get("calibrated_sampler") else "this model"
        parts.append(f"out-of-distribution check not calibrated for {what}")
    elif not report.get("flagged"):
        parts.append("within the calibrated range")
    return "Consistency report: " + "; ".join(parts)


def flag_text(report: dict[str, Any] | None) -> str | None:
    """One line for a flagged report (DICOM ImageComments, job status), None when not flagged."""
    if not report or not report.get("flagged"):
        return None
    return "OUT OF DISTRIBUTION: " + "; ".join(report.get("reasons") or [])
