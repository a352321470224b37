"""CGLS: conjugate gradient on the normal equations ``A^H A x = A^H y`` in its stable least-squares form.

Works on the residual ``r = y - A x`` instead of forming ``A^H A`` (Hestenes & Stiefel; Paige & Saunders)::

    s = A^H r,  q = A p,  alpha = ||s||^2 / ||q||^2,  x += alpha p,  r -= alpha q,
    s+ = A^H r,  p = s+ + (||s+||^2 / ||s||^2) p

Batched: with ``batch_dims=k`` the first k axes of both ``x`` and ``y`` index independent problems (e.g. CT slices),
each with its own step sizes. Unregularised: the iteration count is the regulariser (early stopping).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.optim.cg import batch_inner
from models.physics.linop import LinearOperator


def cgls(A: LinearOperator, y: torch.Tensor, x0: torch.Tensor | None = None,  # noqa: N803 - math name
         iterations: int = 20, batch_dims: int = 0,
         progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Minimise ``||A x - y||^2`` by ``iterations`` CGLS steps from ``x0`` (default 0, shaped like ``A^H y``)."""
    if x0 is None:
        r = y.clone()
        s = A.adjoint(r)
        x = torch.zeros_like(s)
    else:
        x = x0.clone()
        r = y - A.forward(x)
        s = A.adjoint(r)
    x_dims = tuple(range(batch_dims, s.ndim))
    y_dims = tuple(range(batch_dims, y.ndim))
    p = s.clone()
    gamma = batch_inner(s, s, x_dims)
    for it in range(iterations):
        q = A.forward(p)
        alpha = gamma / batch_inner(q, q, y_dims).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * q
        s = A.adjoint(r)
        gamma_new = batch_inner(s, s, x_dims)
        p = s + (gamma_new / gamma.clamp_min(1e-30)) * p
        gamma = gamma_new
        if progress:
            progress(it + 1, iterations)
    return x
