"""Classical CT reconstructions: FBP, SIRT, CGLS and ADMM-TV (2D per slice, 3D with TV along z).

ADMM-TV and CGLS are the generic ``models.classical.tv.admm_tv`` and ``models.optim.cgls.cgls`` on the projector.
All take a sinogram ``y`` of shape ``(slices, views, detectors)`` and a ``CTProjector`` ``A`` (or, for FBP, its
geometry) and return volumes ``(slices, ny, nx)`` in the units of the projected image (1/mm for attenuation).
Iterative methods accept ``progress(done, total)``.

Regularisation weights are scale-free: ADMM-TV solves ``min_x 1/2 ||A x - y||^2 + lam_abs TV(x)`` with
``lam_abs = lam * L * s``, ``rho_abs = rho * L``, where ``L = ||A^T A||`` (power iteration, cached on the operator)
and ``s = <A 1, y> / ||A 1||^2`` (the value of the uniform image that best explains ``y``, i.e. the mean
attenuation over the field of view). So one ``lam`` suits any image size, view count, pixel size and unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.classical.tv import admm_tv
from models.optim.cg import max_eigenvalue
from models.optim.cgls import cgls as generic_cgls
from models.physics.ct.fbp import filtered_backprojection
from models.physics.ct.geometry import Geometry
from models.physics.ct.projector import CTProjector

Progress = Callable[[int, int], None]


def fbp(sinogram: torch.Tensor, geom: Geometry | CTProjector, filter_name: str = "ramp",
        cutoff: float = 1.0) -> torch.Tensor:
    """Filtered backprojection (see ``models.physics.ct.fbp``): ``(S, V, N) -> (S, ny, nx)``."""
    geometry = geom.geom if isinstance(geom, CTProjector) else geom
    return filtered_backprojection(sinogram, geometry, filter_name, cutoff)


def sirt(sinogram: torch.Tensor, op: CTProjector, iterations: int = 100, nonneg: bool = True,
         x0: torch.Tensor | None = None, relaxation: float = 1.0, progress: Progress | None = None) -> torch.Tensor:
    """SIRT: ``x <- x + relaxation * C A^T R (y - A x)`` with ``R = 1 / (A 1)``, ``C = 1 / (A^T 1)``
    (rays and pixels the image never touches are left out), then ``x <- max(x, 0)`` if ``nonneg``."""
    dev, dt = sinogram.device, sinogram.dtype
    row = op.forward(torch.ones(op.image_shape, device=dev, dtype=dt))
    col = op.adjoint(torch.ones(op.sinogram_shape, device=dev, dtype=dt))
    r = torch.where(row > 0, 1.0 / row.clamp_min(1e-12), torch.zeros_like(row))
    c = torch.where(col > 0, relaxation / col.clamp_min(1e-12), torch.zeros_like(col))
    x = torch.zeros(sinogram.shape[0], *op.image_shape, device=dev, dtype=dt) if x0 is None else x0.clone()
    for it in range(iterations):
        x = x + c * op.adjoint(r * (sinogram - op.forward(x)))
        if nonneg:
            x = x.clamp_min(0)
        if progress:
            progress(it + 1, iterations)
    return x


def cgls(sinogram: torch.Tensor, op: CTProjector, iterations: int = 20, x0: torch.Tensor | None = None,
         progress: Progress | None = None) -> torch.Tensor:
    """CGLS (CG on the normal equations ``A^T A x = A^T y`` in its stable least-squares form), each slice with
    its own step sizes (``models.optim.cgls``). Unregularised: the iteration count is the regulariser."""
    return generic_cgls(op, sinogram, x0=x0, iterations=iterations, batch_dims=sinogram.ndim - 2, progress=progress)


def operator_norm2(op: CTProjector, iters: int = 30) -> float:
    """``||A^T A||`` by power iteration on one slice, cached on the operator."""
    cached = getattr(op, "_norm2_cache", None)
    if cached is None:
        like = torch.zeros(op.image_shape, dtype=torch.float32)
        cached = max_eigenvalue(op.N, like, iters=iters)
        op._norm2_cache = cached  # type: ignore[attr-defined]
    return float(cached)


def image_scale(sinogram: torch.Tensor, op: CTProjector) -> float:
    """``<A 1, y> / ||A 1||^2``: the mean attenuation over the field of view (>= a tiny floor)."""
    ones = op.forward(torch.ones(op.image_shape, device=sinogram.device, dtype=sinogram.dtype))
    scale = float((ones * sinogram).sum() / (ones * ones).sum().clamp_min(1e-30) / sinogram.shape[0])
    return max(scale, 1e-12)


@dataclass(frozen=True)
class ADMMSettings:
    """ADMM-TV weights (scale-free, see the module docstring) and iteration counts."""

    lam: float = 1e-3          # in-plane (isotropic) TV weight
    lam_z: float = 1e-3        # TV weight along z (3D only)
    rho: float = 1e-3          # ADMM penalty
    iterations: int = 100      # outer ADMM iterations
    cg_iterations: int = 5     # CG steps per x-update, warm started


@dataclass(frozen=True)
class NoiseViewsRule:
    """``log10 w = a + b log10(max(sigma_rel, floor)) + c log10(clip(views, *views_range))``.

    ``sigma_rel`` is the sinogram's rms noise over its rms (``models.physics.ct.noise``); below ``floor`` (a
    noise-free sinogram estimates 0) the weight stops falling, and view counts are clipped to the range the rule
    was fitted on.
    """

    a: float
    b: float
    c: float
    floor: float
    views_range: tuple[int, int]

    def __call__(self, views: int, sigma_rel: float) -> float:
        s = max(float(sigma_rel), self.floor)
        v = min(max(int(views), self.views_range[0]), self.views_range[1])
        return float(10.0 ** (self.a + self.b * math.log10(s) + self.c * math.log10(v)))

    def formula(self, name: str = "lam") -> str:
        """The rule in one line, with its constants."""
        lo, hi = self.views_range
        return (f"log10 {name} = {self.a:.3f} {'+' if self.b >= 0 else '-'} {abs(self.b):.3f} log10(max(sigma_rel, "
                f"{self.floor:.2g})) {'+' if self.c >= 0 else '-'} {abs(self.c):.3f} log10(views clipped to "
                f"[{lo}, {hi}]); sigma_rel = rms noise / rms sinogram")


# ADMM-TV 3D weight from the noise level and the number of views, lam_z = lam (rho, iterations as ADMMSettings).
# Fitted by benchmarks/ct_tune_admm.py on its tuning set only (results and the exact command:
# benchmarks/results/ct_admm_tv.json): parallel beam over 180 deg, 64 x 64 x 4, pseudo-CT brain slab 1 and one
# random-ellipsoid volume, views 10/30/60/120 x I0 2e3/1e4/5e4/noise-free (sigma_rel about 0.039/0.017/0.008/0).
# Per case the PSNR-best lam of a half-decade grid 3e-5..1e-1 (refined by a parabola in log10), then least squares
# on log10 lam with the floor picked from a grid by the residual: rms residual 0.15 decades, mostly between the
# volumes (the ellipsoids' best lam is about twice the brain's). lam grows about linearly with the noise, and
# I0 >= 5e4 is as good as noise-free here (below the floor). Best lam at 96 px matched 64 px within 10-20 %.
ADMM_LAM_RULE = NoiseViewsRule(a=-0.39, b=1.022, c=-0.285, floor=0.013, views_range=(10, 120))
MAX_LAM = 10.0  # the methods' upper bound on lam


def tuned_admm_settings(views: int, sigma_rel: float = 0.0) -> ADMMSettings:
    """ADMM-TV 3D settings for ``views`` views and relative noise ``sigma_rel`` (0: noise-free):
    ``lam = lam_z = ADMM_LAM_RULE(views, sigma_rel)`` (at most ``MAX_LAM``), rho and iteration counts fixed."""
    lam = min(ADMM_LAM_RULE(views, sigma_rel), MAX_LAM)
    return ADMMSettings(lam=lam, lam_z=lam)


def _admm_tv(sinogram: torch.Tensor, op: CTProjector, lam: float, lam_z: float, rho: float, iterations: int,
             cg_iterations: int, nonneg: bool, volume: bool, x0: torch.Tensor | None,
             progress: Progress | None) -> torch.Tensor:
    norm2 = operator_norm2(op)
    scale = image_scale(sinogram, op)
    return admm_tv(op, sinogram, lam=lam * norm2 * scale, lam_z=lam_z * norm2 * scale, rho=rho * norm2,
                   iterations=iterations, cg_iterations=cg_iterations, nonneg=nonneg, volume=volume, slice_axis=-3,
                   x0=x0, progress=progress)


def admm_tv_2d(sinogram: torch.Tensor, op: CTProjector, lam: float = 1e-3, rho: float = 1e-3, iterations: int = 100,
               cg_iterations: int = 5, nonneg: bool = True, x0: torch.Tensor | None = None,
               progress: Progress | None = None) -> torch.Tensor:
    """Slice-by-slice ADMM for ``min 1/2 ||A x - y||^2 + lam_abs ||grad_xy x||_{2,1}`` (+ ``x >= 0``).

    Splitting ``z = D x`` (and ``w = x`` for non-negativity), scaled duals ``u``: the x-update solves
    ``(A^T A + rho D^T D + rho I) x = A^T y + rho D^T (z - u) + rho (w - u_w)`` by ``cg_iterations`` warm-started
    CG steps; ``z = shrink(D x + u, lam / rho)`` (isotropic, per pixel); ``w = max(x + u_w, 0)``; duals ascend.
    """
    return _admm_tv(sinogram, op, lam, 0.0, rho, iterations, cg_iterations, nonneg, False, x0, progress)


def admm_tv_3d(sinogram: torch.Tensor, op: CTProjector, lam: float = 1e-3, lam_z: float = 1e-3, rho: float = 1e-3,
               iterations: int = 100, cg_iterations: int = 5, nonneg: bool = True, x0: torch.Tensor | None = None,
               progress: Progress | None = None) -> torch.Tensor:
    """ADMM for ``min 1/2 ||A x - y||^2 + lam_abs ||grad_xy x||_{2,1} + lam_z_abs ||D_z x||_1`` over the volume.

    As ``admm_tv_2d`` with ``D = (D_z, D_y, D_x)``: the x-update is one CG on the whole volume,
    ``(A^T A + rho D^T D [+ rho I]) x = A^T y + rho D^T (z - u) [+ rho (w - u_w)]`` (DiffusionMBIR/DDS use the
    ``D_z`` part alone; ``lam=0`` gives exactly that), ``z_z = soft(D_z x + u_z, lam_z / rho)`` and the in-plane
    pair is shrunk jointly. Slices are assumed evenly spaced (the slice thickness does not enter).
    """
    return _admm_tv(sinogram, op, lam, lam_z, rho, iterations, cg_iterations, nonneg, True, x0, progress)
