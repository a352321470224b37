"""A small linear-operator abstraction: solvers take operators, not functions of a modality.

An operator maps tensors of ``ishape``-like layout to ``oshape``-like layout and knows its adjoint.
Composition (``A @ B``), scaling and sums build new operators, in the spirit of sigpy's ``Linop``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class LinearOperator:
    """A linear map with an adjoint. Subclasses implement ``forward`` and ``adjoint``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``; subclasses override when a cheaper form exists."""
        return self.adjoint(self.forward(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    @property
    def H(self) -> LinearOperator:  # noqa: N802 - the conventional name for the adjoint
        return _Adjoint(self)

    def __matmul__(self, other: LinearOperator) -> LinearOperator:
        return _Composition(self, other)

    def __mul__(self, scale: float) -> LinearOperator:
        return _Scaled(self, scale)

    __rmul__ = __mul__


class FunctionOperator(LinearOperator):
    """An operator from a pair of callables (forward, adjoint)."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor],
                 adjoint: Callable[[torch.Tensor], torch.Tensor]):
        self._forward = forward
        self._adjoint = adjoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._adjoint(y)


class Identity(LinearOperator):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y


class _Adjoint(LinearOperator):
    def __init__(self, op: LinearOperator):
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.forward(y)


class _Composition(LinearOperator):
    def __init__(self, outer: LinearOperator, inner: LinearOperator):
        self.outer, self.inner = outer, inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer.forward(self.inner.forward(x))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))


class _Scaled(LinearOperator):
    def __init__(self, op: LinearOperator, scale: float):
        self.op, self.scale = op, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.op.forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.scale * self.op.adjoint(y)


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real part of the inner product ``<a, b> = sum conj(a) b`` over all elements."""
    return torch.sum(a.conj() * b).real if a.is_complex() else torch.sum(a * b)


def dot_product_test(op: LinearOperator, x: torch.Tensor, y: torch.Tensor) -> float:
    """Relative mismatch ``|<A x, y> - <x, A^H y>| / |<A x, y>|``; about 1e-6 for a correct adjoint."""
    lhs = torch.sum(op.forward(x).conj() * y)
    rhs = torch.sum(x.conj() * op.adjoint(y))
    return float((lhs - rhs).abs() / lhs.abs().clamp_min(1e-30))
