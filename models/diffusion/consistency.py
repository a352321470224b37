"""Data-consistency steps of the decomposed diffusion samplers: ``x0_tilde = dc(x0_hat)``.

Each step starts at the denoised estimate and takes a few conjugate-gradient iterations of a data-fitting problem,
so the result stays in the Krylov subspace around ``x0_hat`` (no gradient through the network). Objects keep
whatever state the method carries from one diffusion step to the next, so make a fresh one for every run.

* ``ADMMTVConsistency`` (CT, DDS / DiffusionMBIR): one ADMM iteration (or ``admm_iters``) of

      min_x 1/2 ||A x - y||^2 + lam ||D_z x||_1,

  ``D_z`` the forward difference along the slice axis (Neumann boundary), scaled dual ``u``, penalty ``rho``::

      x <- cg_iters CG steps on (A^H A + rho D_z^H D_z) x = A^H y + rho D_z^H (z - u), started at x0_hat
      z <- soft(D_z x + u, lam / rho)
      u <- u + D_z x - z

  ``z`` and ``u`` start at 0 at the first diffusion step and persist across steps, as in both reference codes
  (DDS ``solver_3d.py`` and DiffusionMBIR ``controllable_generation_TV.py`` keep ``del_z``, ``udel_z`` for the
  whole run). ``lam = 0`` is plain CG data consistency, ``A^H A x = A^H y`` from ``x0_hat`` (no z, u).
* ``ProximalConsistency`` (MRI, DDS): ``cg_iters`` CG steps on ``(I + gamma A^H A) x = x0_hat + gamma A^H y``
  from ``x0_hat``, i.e. towards ``argmin_x ||x - x0_hat||^2 + gamma ||A x - y||^2``. Works for complex volumes.

``batch_dims = k``: the first k axes of the volume index independent problems (A must act on them one by one,
as the CT projector and SENSE do with leading axes); CG then runs one system per index, with its own step sizes.
The TV axis may not be one of them. ``y`` may lack those axes (it is broadcast).
"""

from __future__ import annotations

from typing import Protocol

import torch

from models.diffusion._validate import check_count, check_weight
from models.optim.cg import conjugate_gradient
from models.optim.prox import soft_threshold
from models.physics.finite_difference import FiniteDifference
from models.physics.linop import Identity, LinearOperator

CG_TOL = 1e-5
"""CG stops early once every system's relative residual ``||r|| / ||b||`` is below this (the reference code stops
at an absolute 1e-5): past convergence, float32 round-off in the null space of a singular ``A^H A`` (a masked
Fourier transform, few CT views) gives ``<p, N p>`` near 0 and CG diverges."""


class DataConsistency(Protocol):
    """``x0_tilde = dc(x0_hat)`` on a volume; may keep state between the diffusion steps of one run."""

    def __call__(self, x0_hat: torch.Tensor) -> torch.Tensor: ...


class ADMMTVConsistency:
    """ADMM-TV along one axis (module docstring); ``lam = 0`` gives plain CG on ``A^H A x = A^H y``.

    ``tv_axis`` counts from the end when negative (``-3`` is z of a ``(Z, H, W)`` volume, and stays z when a
    leading batch axis is added). ``rho`` is absolute (a fraction of ``||A^H A||`` is a good scale).
    """

    def __init__(self, A: LinearOperator, y: torch.Tensor, *, lam: float, rho: float,  # noqa: N803 - math name
                 cg_iters: int = 5, tv_axis: int = -3, admm_iters: int = 1, batch_dims: int = 0):
        self.A = A
        self.lam = check_weight("lam", lam, positive=False)
        self.rho = check_weight("rho", rho, positive=True)
        self.cg_iters = check_count("cg_iters", cg_iters, 1, 1000)
        self.admm_iters = check_count("admm_iters_per_step", admm_iters, 1, 100)
        self.batch_dims = check_count("batch_dims", batch_dims, 0, 16)
        if isinstance(tv_axis, bool) or not isinstance(tv_axis, int):
            raise ValueError(f"tv_axis must be an integer, got {tv_axis!r}")
        self.tv_axis = tv_axis
        self.aty = A.adjoint(y)
        self.D = FiniteDifference((tv_axis,))
        self.normal = A.N + self.rho * self.D.N if self.lam > 0 else A.N
        self.z: torch.Tensor | None = None
        self.u: torch.Tensor | None = None

    def _check_axes(self, x: torch.Tensor) -> None:
        axis = self.tv_axis % x.ndim if -x.ndim <= self.tv_axis < x.ndim else None
        if axis is None or axis >= x.ndim - 2:
            raise ValueError(f"tv_axis {self.tv_axis} must be an axis before (H, W) of the volume {tuple(x.shape)}")
        if self.lam > 0 and axis < self.batch_dims:
            raise ValueError(f"tv_axis {self.tv_axis} is one of the batch_dims={self.batch_dims} independent axes")

    def __call__(self, x0_hat: torch.Tensor) -> torch.Tensor:
        self._check_axes(x0_hat)
        aty = torch.broadcast_to(self.aty, x0_hat.shape)
        x = x0_hat
        if self.lam == 0:
            for _ in range(self.admm_iters):
                x = conjugate_gradient(self.normal, aty, x0=x, max_iter=self.cg_iters, tol=CG_TOL,
                                       batch_dims=self.batch_dims)
            return x
        if self.z is None or self.z.shape[1:] != x.shape:
            self.z = torch.zeros((1, *x.shape), dtype=x.dtype, device=x.device)
            self.u = torch.zeros_like(self.z)
        assert self.u is not None
        for _ in range(self.admm_iters):
            rhs = aty + self.rho * self.D.adjoint(self.z - self.u)
            x = conjugate_gradient(self.normal, rhs, x0=x, max_iter=self.cg_iters, tol=CG_TOL,
                                   batch_dims=self.batch_dims)
            v = self.D.forward(x) + self.u
            self.z = soft_threshold(v, self.lam / self.rho)
            self.u = v - self.z
        return x


class ProximalConsistency:
    """``cg_iters`` CG steps on ``(I + gamma A^H A) x = x0_hat + gamma A^H y`` from ``x0_hat`` (stateless)."""

    def __init__(self, A: LinearOperator, y: torch.Tensor, *, gamma: float, cg_iters: int = 5,  # noqa: N803
                 batch_dims: int = 0):
        self.gamma = check_weight("gamma", gamma, positive=True)
        self.cg_iters = check_count("cg_iters", cg_iters, 1, 1000)
        self.batch_dims = check_count("batch_dims", batch_dims, 0, 16)
        self.aty = A.adjoint(y)
        self.normal = Identity() + self.gamma * A.N

    def __call__(self, x0_hat: torch.Tensor) -> torch.Tensor:
        rhs = x0_hat + self.gamma * self.aty
        return conjugate_gradient(self.normal, rhs, x0=x0_hat, max_iter=self.cg_iters, tol=CG_TOL,
                                  batch_dims=self.batch_dims)
