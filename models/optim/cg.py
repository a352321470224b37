"""Conjugate gradient for Hermitian positive (semi-)definite systems ``N x = b``.

``N`` is any callable (usually ``op.normal`` plus a regulariser). Batched: with ``batch_dims=k`` the
first k axes index independent systems, each with its own step sizes, so a stack of slices converges
as fast as its slowest slice and no slower.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _dot(a: torch.Tensor, b: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    prod = a.conj() * b if a.is_complex() else a * b
    return prod.sum(dim=dims, keepdim=True).real if prod.is_complex() else prod.sum(dim=dims, keepdim=True)


def conjugate_gradient(normal: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                       x0: torch.Tensor | None = None, max_iter: int = 10, tol: float = 0.0,
                       batch_dims: int = 0) -> torch.Tensor:
    """Solve ``normal(x) = rhs`` by CG, stopping after ``max_iter`` steps or when every system's
    relative residual ``||r|| / ||rhs||`` is below ``tol``."""
    dims = tuple(range(batch_dims, rhs.ndim))
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - normal(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rr = _dot(r, r, dims)
    rhs_norm2 = _dot(rhs, rhs, dims).clamp_min(1e-30)
    for _ in range(max_iter):
        if tol > 0 and bool(torch.all(rr <= tol**2 * rhs_norm2)):
            break
        ap = normal(p)
        alpha = rr / _dot(p, ap, dims).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = _dot(r, r, dims)
        p = r + (rr_new / rr.clamp_min(1e-30)) * p
        rr = rr_new
    return x


def max_eigenvalue(normal: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor,
                   iters: int = 20, seed: int = 0) -> float:
    """Largest eigenvalue of a Hermitian PSD operator by power iteration (a Lipschitz constant)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(like.shape, generator=gen, dtype=like.real.dtype if like.is_complex() else like.dtype)
    if like.is_complex():
        x = torch.complex(x, torch.randn(like.shape, generator=gen, dtype=x.dtype))
    x = x / torch.linalg.vector_norm(x)
    value = 0.0
    for _ in range(iters):
        y = normal(x)
        value = float(torch.linalg.vector_norm(y))
        x = y / max(value, 1e-30)
    return value
