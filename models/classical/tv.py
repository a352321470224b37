"""Total-variation regularised least squares by ADMM, for any linear operator (CT projector, SENSE, ...).

    min_x 1/2 ||A x - y||^2 + lam ||(D_y x, D_x x)||_{2,1} [+ lam_z ||D_z x||_1]  [+ indicator(x >= 0)]

``D_y, D_x`` are forward differences over the last two (in-plane) axes, isotropic (the pair is shrunk jointly per
pixel, by its magnitude, so complex images work); ``D_z`` along ``slice_axis`` is anisotropic. Images are
``(..., [slices,] H, W)``:

* 2D (``volume=False``): ``D = (D_y, D_x)``; every leading axis indexes an independent problem, so the CG x-update
  runs one system per slice (``batch_dims = ndim - 2``), each with its own step sizes;
* 3D (``volume=True``): ``D = (D_z, D_y, D_x)``, one coupled system per volume (axes before ``slice_axis`` are
  independent). A single slice falls back to 2D. ``lam = 0`` gives TV along z alone (as DiffusionMBIR/DDS use).

``lam``, ``lam_z`` and ``rho`` are absolute here (they may be tensors that broadcast per slice / volume);
``models.classical.ct`` and ``models.classical.mri`` make them scale-free. Solver: ``models.optim.admm``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.optim.admm import admm
from models.optim.prox import group_soft_threshold, soft_threshold
from models.physics.finite_difference import FiniteDifference
from models.physics.linop import LinearOperator

Weight = float | torch.Tensor


def tv_prox(lam: Weight, lam_z: Weight | None = None) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """Prox of ``t (lam ||v_inplane||_{2,1} [+ lam_z ||v_z||_1])`` for ``v`` stacked as ``[(v_z,) v_y, v_x]``.

    Without ``lam_z`` all components are one isotropic group; with it ``v[0]`` is soft-thresholded on its own.
    """

    def prox(v: torch.Tensor, t: float) -> torch.Tensor:
        if lam_z is None:
            return group_soft_threshold(v, lam * t, dim=0)
        return torch.cat([soft_threshold(v[:1], lam_z * t), group_soft_threshold(v[1:], lam * t, dim=0)])

    return prox


def admm_tv(A: LinearOperator, y: torch.Tensor, lam: Weight, lam_z: Weight = 0.0,  # noqa: N803 - math name
            rho: float = 1.0, iterations: int = 100, cg_iterations: int = 5, nonneg: bool = False,
            volume: bool = False, slice_axis: int = -3, x0: torch.Tensor | None = None,
            progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """ADMM-TV (module docstring) of data ``y`` under ``A``; returns the image shaped like ``A^H y``.

    ``rho``: ADMM penalty (absolute; a fraction of ``||A^H A||`` is a good scale); ``cg_iterations``: warm-started
    CG steps per x-update; ``nonneg``: add ``x >= 0`` (real images); ``x0``: start (default 0).
    """
    aty = A.adjoint(y)
    ndim = aty.ndim
    if ndim < 2:
        raise ValueError(f"images must have at least two axes (H, W), got shape {tuple(aty.shape)}")
    if nonneg and aty.is_complex():
        raise ValueError("non-negativity needs a real image")
    use_z = False
    if volume:
        if ndim < 3 or not -ndim <= slice_axis < ndim or slice_axis % ndim >= ndim - 2:
            raise ValueError(f"slice_axis {slice_axis} must be an axis before the image axes of shape "
                             f"{tuple(aty.shape)}")
        use_z = aty.shape[slice_axis] > 1
    if use_z:
        D = FiniteDifference((slice_axis, -2, -1))  # noqa: N806
        prox = tv_prox(lam, lam_z)
        batch_dims = slice_axis % ndim
    else:
        D = FiniteDifference((-2, -1))  # noqa: N806
        prox = tv_prox(lam)
        batch_dims = ndim - 2
    return admm(A, y, D, prox, rho, iterations=iterations, cg_iterations=cg_iterations, nonneg=nonneg, x0=x0,
                batch_dims=batch_dims, progress=progress, aty=aty)
