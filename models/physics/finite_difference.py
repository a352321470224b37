"""Forward finite differences as a linear operator (the gradient of total variation).

``FiniteDifference(dims)`` maps ``x`` to ``D x`` of shape ``(len(dims), *x.shape)``:

    (D x)_i[..., k, ...] = x[..., k + 1, ...] - x[..., k, ...]   along axis dims[i], 0 at the last index

(Neumann boundary). Its adjoint is minus the backward-difference divergence,
``(D^H g) = sum_i D_i^H g_i`` with ``(D_i^H g)[k] = g[k - 1] - g[k]`` (``g[-1] = 0``, ``g[n-1]`` taken as 0).
Works for real and complex tensors; ``dims=(-2, -1)`` is in-plane 2D, ``(-3, -2, -1)`` 3D, ``(-3,)`` z only.
With the components stacked on axis 0, isotropic TV is ``sum ||(D x)[:, r]||_2`` (``group_soft_threshold``
over axis 0 is its prox) and anisotropic TV ``||D x||_1`` (``soft_threshold``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.physics.linop import LinearOperator


def forward_difference(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x[k+1] - x[k]`` along ``dim``, 0 at the last index (Neumann boundary); same shape as ``x``."""
    n = x.shape[dim]
    out = torch.zeros_like(x)
    if n > 1:
        torch.sub(x.narrow(dim, 1, n - 1), x.narrow(dim, 0, n - 1), out=out.narrow(dim, 0, n - 1))
    return out


def forward_difference_adjoint(g: torch.Tensor, dim: int) -> torch.Tensor:
    """Adjoint of ``forward_difference`` (minus the backward-difference divergence)."""
    n = g.shape[dim]
    out = torch.zeros_like(g)
    if n > 1:
        inner = g.narrow(dim, 0, n - 1)
        out.narrow(dim, 0, n - 1).sub_(inner)
        out.narrow(dim, 1, n - 1).add_(inner)
    return out


class FiniteDifference(LinearOperator):
    """``x -> stack([forward_difference(x, d) for d in dims])``, output ``(len(dims), *x.shape)``.

    ``dims`` are axes of the input (negative counts from the end). ``||D^H D|| <= 4 len(dims)``.
    """

    def __init__(self, dims: Sequence[int]):
        self.dims = tuple(int(d) for d in dims)
        if not self.dims:
            raise ValueError("FiniteDifference needs at least one axis")
        if len(set(self.dims)) != len(self.dims):
            raise ValueError(f"repeated axis in dims {self.dims}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([forward_difference(x, d) for d in self.dims])

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if y.shape[0] != len(self.dims):
            raise ValueError(f"expected {len(self.dims)} stacked components, got shape {tuple(y.shape)}")
        return sum(forward_difference_adjoint(y[i], d) for i, d in enumerate(self.dims))  # type: ignore[return-value]
