"""Filtered backprojection: ramp-family filters, fan-beam weighting, pixel-driven backprojection.

Parallel beam (Kak & Slaney, ch. 3): ``f(x, y) = int_0^pi (p_theta * h)(x cos theta + y sin theta) dtheta`` with
``h`` the ramp filter ``|w|``. Discretely, with detector pitch ``tau``, the band-limited ramp kernel is
``h[0] = 1 / (4 tau^2)``, ``h[n] = -1 / (n pi tau)^2`` for odd ``n`` and 0 for even ``n``; the convolution
``tau * sum_n p[n] h[k - n]`` is done by FFT after zero padding to at least twice the detector count (no
circular wrap-around, no DC bias), and a window ``W(f)`` (``f`` in cycles per sample, ``|f| <= 1/2``) shapes it:

- ``ramp`` (Ram-Lak): 1; ``shepp-logan``: ``sinc(f) = sin(pi f) / (pi f)``; ``cosine``: ``cos(pi f)``;
- ``hamming``: ``0.54 + 0.46 cos(2 pi f)``; ``hann``: ``0.5 + 0.5 cos(2 pi f)``;
- ``cutoff`` < 1 also zeroes frequencies above ``cutoff`` x Nyquist.

Fan beam, exact weighted FBP over a full 2 pi orbit (no rebinning), with source-to-isocentre distance ``R``:

- equiangular detector, fan angle ``gamma``: pre-weight ``R cos(gamma) p(beta, gamma)``, filter with
  ``g(gamma) = (gamma / sin gamma)^2 h(gamma) / 2`` in angle units, backproject at the pixel's fan angle with
  weight ``1 / L^2`` (``L`` = source-to-pixel distance);
- flat detector, rescaled to the isocentre (``s = u R / D``): pre-weight ``R / sqrt(R^2 + s^2)``, filter with
  ``h(s) / 2``, backproject at the pixel's ``s`` with weight ``1 / U^2``, ``U = (R + p . t) / R``.

The angular integral is ``sum over views x d_theta`` with ``d_theta = pi / views`` (parallel) or
``2 pi / views`` (fan): any view set is treated as an even sampling of the full orbit, so sparse views keep
the image's units; a limited arc (or a fan-beam short scan, which would need Parker weights) does not.
Backprojection is pixel-driven: each pixel centre is projected onto the detector and the filtered projection
is linearly interpolated there (zero outside the detector). It is not the adjoint of the Joseph projector (FBP
needs the distance weights and a pixel-driven interpolation, not the transpose of the ray-driven one).
Result units: those of the projected image.
"""

from __future__ import annotations

import math

import torch

from models.physics.ct.geometry import FanBeamGeometry, Geometry, ParallelBeamGeometry

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def _window(name: str, f: torch.Tensor) -> torch.Tensor:
    if name == "ramp":
        return torch.ones_like(f)
    if name == "shepp-logan":
        return torch.sinc(f)
    if name == "cosine":
        return torch.cos(math.pi * f)
    if name == "hamming":
        return 0.54 + 0.46 * torch.cos(2 * math.pi * f)
    if name == "hann":
        return 0.5 + 0.5 * torch.cos(2 * math.pi * f)
    raise ValueError(f"unknown FBP filter {name!r}; choose one of {', '.join(FILTERS)}")


def padded_length(num_detectors: int) -> int:
    """FFT length for filtering: the next power of two >= 2 x detectors (at least 64)."""
    return max(64, 1 << (2 * num_detectors - 1).bit_length())


def filter_response(num_detectors: int, tau: float, filter_name: str = "ramp", equiangular: bool = False,
                    cutoff: float = 1.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Real frequency response ``(P // 2 + 1,)`` for ``rfft`` of length ``P = padded_length(num_detectors)``,
    including the factor ``tau`` of the discrete convolution (and the fan-beam kernel changes)."""
    size = padded_length(num_detectors)
    n = torch.cat([torch.arange(0, size // 2 + 1), torch.arange(-size // 2 + 1, 0)]).to(torch.float64)
    h = torch.zeros(size, dtype=torch.float64)
    h[0] = 1.0 / (4 * tau**2)
    odd = n.remainder(2) == 1
    h[odd] = -1.0 / (n[odd] * math.pi * tau) ** 2
    if equiangular:  # g(gamma) = (gamma / sin gamma)^2 h(gamma) / 2
        gamma = n * tau
        ratio = torch.ones_like(gamma)
        nz = n != 0
        ratio[nz] = gamma[nz] / torch.sin(gamma[nz])
        h = 0.5 * ratio**2 * h
    response = torch.fft.rfft(h).real * tau
    f = torch.fft.rfftfreq(size, dtype=torch.float64)
    response = response * _window(filter_name, f)
    if cutoff < 1.0:
        response = torch.where(f <= 0.5 * cutoff, response, torch.zeros_like(response))
    return response.to(dtype)


def filter_sinogram(sinogram: torch.Tensor, geom: Geometry, filter_name: str = "ramp",
                    cutoff: float = 1.0) -> torch.Tensor:
    """Fan-beam pre-weighting (if any) and ramp-family filtering along the detector axis, ``(..., V, N)``."""
    n_det = geom.num_detectors
    if sinogram.shape[-1] != n_det:
        raise ValueError(f"sinogram has {sinogram.shape[-1]} detectors, geometry {n_det}")
    real_dtype = sinogram.dtype if sinogram.is_floating_point() else torch.float32
    u = torch.as_tensor(geom.detector_coordinates(), dtype=torch.float64, device=sinogram.device)
    equiangular = False
    if isinstance(geom, ParallelBeamGeometry):
        tau, weighted = geom.detector_spacing, sinogram
    elif isinstance(geom, FanBeamGeometry):
        r, d = geom.source_to_isocenter, geom.source_to_detector
        if geom.detector_type == "equiangular":
            tau, equiangular = geom.detector_spacing / d, True
            pre = r * torch.cos(u / d)
        else:
            tau = geom.detector_spacing * r / d
            s = u * r / d
            pre = r / torch.sqrt(r**2 + s**2) * 0.5  # the 1/2 of g(s) = h(s) / 2
        weighted = sinogram * pre.to(real_dtype)
    else:
        raise TypeError(f"unsupported geometry {type(geom).__name__}")
    size = padded_length(n_det)
    response = filter_response(n_det, tau, filter_name, equiangular, cutoff).to(real_dtype).to(sinogram.device)
    spectrum = torch.fft.rfft(weighted, n=size, dim=-1)
    return torch.fft.irfft(spectrum * response, n=size, dim=-1)[..., :n_det]


def _pixel_projection(geom: Geometry, angles: torch.Tensor, dtype: torch.dtype,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For views ``angles`` (V,): continuous detector index of every pixel centre ``(V, P)`` and the
    backprojection weight (distance weighting x d_theta; ``(V, P)``, or ``(V, 1)`` for parallel beam)."""
    ny, nx = geom.image_shape
    ps = geom.pixel_size
    y = ((torch.arange(ny, device=device, dtype=torch.float64) - (ny - 1) / 2) * ps).to(dtype)
    x = ((torch.arange(nx, device=device, dtype=torch.float64) - (nx - 1) / 2) * ps).to(dtype)
    c = torch.cos(angles).to(dtype)[:, None, None]
    s = torch.sin(angles).to(dtype)[:, None, None]
    along_e = (x[None, None, :] * c + y[None, :, None] * s).reshape(len(angles), -1)   # p . e
    centre = (geom.num_detectors - 1) / 2
    if isinstance(geom, ParallelBeamGeometry):
        index = along_e * (1.0 / geom.detector_spacing) + centre
        return index, torch.full((len(angles), 1), math.pi / geom.num_views, dtype=dtype, device=device)
    r, d = geom.source_to_isocenter, geom.source_to_detector
    a = (y[None, :, None] * c - x[None, None, :] * s).reshape(len(angles), -1) + r  # R + p . t
    dtheta = 2 * math.pi / geom.num_views
    if geom.detector_type == "equiangular":
        index = torch.atan2(along_e, a) * (d / geom.detector_spacing) + centre
        weight = dtheta / (a * a + along_e * along_e)
    else:
        index = (along_e / a) * (d / geom.detector_spacing) + centre
        weight = (dtheta * r * r) / (a * a)
    return index, weight


def backproject_pixel_driven(filtered: torch.Tensor, geom: Geometry, max_elements: int = 2**23) -> torch.Tensor:
    """``sum_views weight(view, pixel) * q(view, detector index of pixel)``, linear interpolation, for
    ``filtered`` of shape ``(..., V, N)``; returns ``(..., ny, nx)``. Differentiable.

    The interpolation is one ``grid_sample`` call per chunk of views (slices as channels, sample points exactly
    on view rows, zeros outside the detector); the detector position of each (view, pixel) is computed once for
    all slices. Views are processed in chunks of about ``max_elements`` (slice, view, pixel) values.
    """
    lead = filtered.shape[:-2]
    n_views, n_det = filtered.shape[-2:]
    if (n_views, n_det) != geom.sinogram_shape:
        raise ValueError(f"sinogram shape {(n_views, n_det)} does not match the geometry {geom.sinogram_shape}")
    ny, nx = geom.image_shape
    n_pix = ny * nx
    q = filtered.reshape(1, -1, n_views, n_det)          # (1, slices, V, N): slices as channels
    batch = q.shape[1]
    angles = torch.as_tensor(geom.angles_array(), dtype=torch.float64, device=filtered.device)
    out = torch.zeros(batch, n_pix, dtype=filtered.dtype, device=filtered.device)
    chunk = max(1, max_elements // (n_pix * max(batch, 1)))
    x_scale = 2.0 / max(n_det - 1, 1)
    y_scale = 2.0 / max(n_views - 1, 1)
    for v0 in range(0, n_views, chunk):
        v1 = min(n_views, v0 + chunk)
        index, weight = _pixel_projection(geom, angles[v0:v1], filtered.dtype, filtered.device)
        # normalised grid_sample coordinates (align_corners=True): x along detectors, y on the view rows
        gx = index * x_scale - 1.0
        rows = torch.arange(v0, v1, device=filtered.device, dtype=filtered.dtype)
        gy = (rows * y_scale - 1.0 if n_views > 1 else torch.zeros_like(rows))[:, None].expand_as(gx)
        grid = torch.stack([gx, gy], dim=-1)[None]           # (1, Vc, P, 2)
        sampled = torch.nn.functional.grid_sample(q, grid, mode="bilinear", padding_mode="zeros",
                                                  align_corners=True)[0]   # (slices, Vc, P)
        if weight.shape[-1] == 1:
            out = out + sampled.sum(dim=1) * weight[0, 0]
        else:
            out = out + (sampled * weight).sum(dim=1)
    return out.reshape(*lead, ny, nx)


def filtered_backprojection(sinogram: torch.Tensor, geom: Geometry, filter_name: str = "ramp",
                            cutoff: float = 1.0) -> torch.Tensor:
    """FBP of ``(..., views, detectors)`` sinograms to ``(..., ny, nx)`` images in the projected units."""
    return backproject_pixel_driven(filter_sinogram(sinogram, geom, filter_name, cutoff), geom)
