"""Thermal noise level of multi-coil k-space.

The receiver adds white complex Gaussian noise: each k-space sample of coil ``c`` carries ``n`` with
``E|n|^2 = sigma_c^2`` (real and imaginary parts each ``sigma_c / sqrt(2)``). The centred orthonormal FFT keeps
that level per pixel, so with maps normalised to ``sum_c |S_c|^2 = 1`` the fully sampled SENSE image has noise
``sqrt(mean_c sigma_c^2)`` - the figure returned here.

Two sources:

* a noise scan (readouts taken with no RF, ISMRMRD ``ACQ_IS_NOISE_MEASUREMENT``): the sample standard deviation
  per coil, scaled by the ratio of the noise and imaging dwell times (noise power grows with bandwidth);
* else the acquisition itself: regions with (almost) no signal. Two candidates, each an unbiased estimate where
  it holds pure noise and biased only upwards where signal leaks in, so the smallest is kept:

  - the four k-space corners (the outer ``border`` of kx and of ky), sampled samples only - the signal of an
    image decays towards high spatial frequencies;
  - the two edges of the readout field of view in hybrid space (x, ky) - the inverse FFT along the fully sampled
    readout of each acquired line; air outside the body holds only noise.

  Each is the median absolute deviation of the real and imaginary parts, ``sigma/sqrt(2) = MAD / 0.6745``.
  At very high SNR signal dominates even the corners and the estimate is an upper bound.
"""

from __future__ import annotations

import numpy as np

MAD_TO_STD = 1.0 / 0.6744897501960817


def _mad_sigma(samples: np.ndarray) -> float:
    """Complex noise level ``sigma`` (``E|n|^2 = sigma^2``) of zero-mean complex samples, per their MAD."""
    parts = np.concatenate([samples.real.ravel(), samples.imag.ravel()])
    if parts.size < 32:
        return float("inf")
    return float(np.sqrt(2.0) * MAD_TO_STD * np.median(np.abs(parts - np.median(parts))))


def _per_coil_rms(kspace: np.ndarray, select) -> float:
    """``sqrt(mean_c sigma_c^2)`` with each coil's sigma from ``select(coil_kspace)``'s samples."""
    coils = kspace.shape[-3]
    stack = np.moveaxis(kspace.reshape(-1, coils, *kspace.shape[-2:]), 1, 0)
    sigmas = np.array([_mad_sigma(select(coil)) for coil in stack])
    return float(np.sqrt(np.mean(sigmas**2)))


def corner_sigma(kspace: np.ndarray, sampled: np.ndarray, border: float = 0.25) -> float:
    """Noise from the sampled samples in the four corners (the outer ``border`` of both k-space axes)."""
    h, w = kspace.shape[-2:]
    bh, bw = max(1, int(border * h / 2)), max(1, int(border * w / 2))
    rows = np.r_[0:bh, h - bh:h]
    cols = np.r_[0:bw, w - bw:w]
    corner = np.zeros((h, w), bool)
    corner[np.ix_(rows, cols)] = True
    keep = corner & np.broadcast_to(sampled, (h, w))
    return _per_coil_rms(kspace, lambda coil: coil[:, keep])


def readout_edge_sigma(kspace: np.ndarray, sampled_columns: np.ndarray, border: float = 0.08) -> float:
    """Noise from the outer ``border`` of the readout field of view (both ends of x), acquired lines only.

    ``kspace`` (..., C, H, W) with the readout along H and phase encoding along W."""
    h = kspace.shape[-2]
    lines = kspace[..., sampled_columns]
    hybrid = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(lines, axes=-2), axis=-2, norm="ortho"), axes=-2)
    b = max(1, int(border * h))
    edges = np.concatenate([hybrid[..., :b, :], hybrid[..., h - b:, :]], axis=-2)
    return _per_coil_rms(edges, lambda coil: coil)


def estimate_kspace_sigma(kspace: np.ndarray, mask: np.ndarray) -> float:
    """Noise level ``sigma`` of k-space (..., C, H, W) sampled where ``mask`` (broadcastable to (H, W)) is set:
    the smaller of the corner and readout-edge estimates (module docstring)."""
    h, w = kspace.shape[-2:]
    sampled = np.broadcast_to(np.asarray(mask) != 0, (h, w))
    columns = sampled.all(axis=0)
    candidates = [corner_sigma(kspace, sampled)]
    if columns.sum() >= 2:
        candidates.append(readout_edge_sigma(kspace, columns))
    return min(candidates)


def noise_scan_sigma(noise: np.ndarray, noise_dwell_us: float | None = None,
                     imaging_dwell_us: float | None = None) -> float:
    """Noise level of the imaging k-space from noise-scan samples (..., C, N) (coils on axis -2).

    The variance per coil scales with the receiver bandwidth, ``1 / dwell``: the imaging level is
    ``sigma_noise^2 * dwell_noise / dwell_imaging`` when both dwell times are known."""
    samples = np.moveaxis(np.asarray(noise), -2, 0).reshape(noise.shape[-2], -1)
    centred = samples - samples.mean(axis=1, keepdims=True)
    variance = float(np.mean(np.abs(centred) ** 2))
    if noise_dwell_us and imaging_dwell_us:
        variance *= noise_dwell_us / imaging_dwell_us
    return float(np.sqrt(variance))
