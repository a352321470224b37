"""ADMM for ``min_x 1/2 ||A x - y||^2 + g(D x)  [+ indicator(x >= 0)]`` with linear operators ``A`` and ``D``.

Splitting ``z = D x`` (and ``w = x`` for non-negativity) with scaled duals ``u`` (``u_w``), penalty ``rho``:

    x <- argmin 1/2 ||A x - y||^2 + rho/2 ||D x - z + u||^2 [+ rho/2 ||x - w + u_w||^2]
         i.e. (A^H A + rho D^H D [+ rho I]) x = A^H y + rho D^H (z - u) [+ rho (w - u_w)],
         solved by ``cg_iterations`` conjugate-gradient steps warm started at the previous x
    z <- prox_{g / rho}(D x + u),   u <- u + D x - z
    w <- max(x + u_w, 0),           u_w <- u_w + x - w

``A.N`` is used for ``A^H A``, so an operator's fast normal form is kept. ``batch_dims=k``: the first k axes of x
index independent CG systems (e.g. 2D slices; D must not couple them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.optim.cg import conjugate_gradient
from models.physics.linop import Identity, LinearOperator

Prox = Callable[[torch.Tensor, float], torch.Tensor]


def admm(A: LinearOperator, y: torch.Tensor, D: LinearOperator, prox: Prox, rho: float,  # noqa: N803
         iterations: int = 100, cg_iterations: int = 5, nonneg: bool = False, x0: torch.Tensor | None = None,
         batch_dims: int = 0, progress: Callable[[int, int], None] | None = None,
         aty: torch.Tensor | None = None) -> torch.Tensor:
    """Run ``iterations`` ADMM steps (module docstring) from ``x0`` (default 0); returns x (``max(x, 0)`` if
    ``nonneg``).

    ``prox(v, t) = argmin_z g(z) + ||z - v||^2 / (2 t)`` is called with ``t = 1 / rho``;
    ``progress(iteration, iterations)`` after each step; ``aty``: ``A^H y`` if the caller has it already.
    """
    if not rho > 0:
        raise ValueError(f"rho must be positive, got {rho}")
    aty = A.adjoint(y) if aty is None else aty
    x = torch.zeros_like(aty) if x0 is None else x0.clone()
    z = D.forward(x)
    u = torch.zeros_like(z)
    normal = A.N + rho * D.N
    if nonneg:
        normal = normal + rho * Identity()
        w, u_w = x.clamp_min(0), torch.zeros_like(x)
    t = 1.0 / rho
    for it in range(iterations):
        rhs = aty + rho * D.adjoint(z - u)
        if nonneg:
            rhs = rhs + rho * (w - u_w)
        x = conjugate_gradient(normal, rhs, x0=x, max_iter=cg_iterations, batch_dims=batch_dims)
        v = D.forward(x) + u
        z = prox(v, t)
        u = v - z
        if nonneg:
            w = (x + u_w).clamp_min(0)
            u_w = u_w + x - w
        if progress:
            progress(it + 1, iterations)
    return x.clamp_min(0) if nonneg else x
