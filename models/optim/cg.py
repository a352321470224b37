"""Conjugate gradient for Hermitian positive (semi-)definite systems ``N x = b``, and power iteration.

``N`` is a ``LinearOperator`` (usually a normal operator plus regularisers, e.g. ``A.N + lam * Identity()``) or a
plain callable. Batched: with ``batch_dims=k`` the first k axes index independent systems, each with its own step
sizes, so a stack of slices converges as fast as its slowest slice and no slower::

    alpha = <r, r> / <p, N p>,  x += alpha p,  r -= alpha N p,  p = r + (<r+, r+> / <r, r>) p
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.physics.linop import LinearOperator, as_operator

Operator = LinearOperator | Callable[[torch.Tensor], torch.Tensor]


def batch_inner(a: torch.Tensor, b: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``Re sum_dims conj(a) b``, the summed axes kept as size 1 (one inner product per batched system)."""
    prod = a.conj() * b if a.is_complex() else a * b
    return prod.sum(dim=dims, keepdim=True).real if prod.is_complex() else prod.sum(dim=dims, keepdim=True)


def conjugate_gradient(N: Operator, b: torch.Tensor, x0: torch.Tensor | None = None,  # noqa: N803 - math name
                       max_iter: int = 10, tol: float = 0.0, batch_dims: int = 0,
                       callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Solve ``N x = b`` by CG from ``x0`` (default 0), stopping after ``max_iter`` steps or when every system's
    relative residual ``||r|| / ||b||`` is below ``tol``. ``callback(iteration, max_iter)`` after each step."""
    apply = as_operator(N).forward
    dims = tuple(range(batch_dims, b.ndim))
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x) if x0 is not None else b.clone()
    p = r.clone()
    rr = batch_inner(r, r, dims)
    b_norm2 = batch_inner(b, b, dims).clamp_min(1e-30)
    for it in range(max_iter):
        if tol > 0 and bool(torch.all(rr <= tol**2 * b_norm2)):
            break
        ap = apply(p)
        alpha = rr / batch_inner(p, ap, dims).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = batch_inner(r, r, dims)
        p = r + (rr_new / rr.clamp_min(1e-30)) * p
        rr = rr_new
        if callback is not None:
            callback(it + 1, max_iter)
    return x


def max_eigenvalue(N: Operator, like: torch.Tensor, iters: int = 20, seed: int = 0) -> float:  # noqa: N803
    """Largest eigenvalue of a Hermitian PSD operator ``N`` (e.g. ``A.N``) by power iteration from a seeded random
    start shaped like ``like``: ``x <- N x / ||N x||``, value ``||N x||`` (a Lipschitz constant of the gradient)."""
    apply = as_operator(N).forward
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(like.shape, generator=gen, dtype=like.real.dtype if like.is_complex() else like.dtype)
    if like.is_complex():
        x = torch.complex(x, torch.randn(like.shape, generator=gen, dtype=x.dtype))
    x = x.to(like.device) / torch.linalg.vector_norm(x)
    value = 0.0
    for _ in range(iters):
        y = apply(x)
        value = float(torch.linalg.vector_norm(y))
        x = y / max(value, 1e-30)
    return value
