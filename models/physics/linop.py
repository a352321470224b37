"""A small linear-operator algebra: solvers take operators, not functions of a modality.

An operator maps tensors of one layout to another and knows its adjoint, in the spirit of sigpy's ``Linop``:

* ``A @ B`` composition, ``A.H`` adjoint, ``s * A`` scaling, ``A + B`` / ``A - B`` sums;
* ``A.N`` the normal operator ``A^H A`` (Hermitian, so ``A.N.H`` is ``A.N``), built on ``A.normal`` so a subclass's
  cheaper normal form (e.g. SENSE without FFT shifts) is kept;
* ``Identity`` and ``Multiply(w)`` (diagonal: ``x -> w x``, adjoint ``y -> conj(w) y``).

Every operator should pass ``dot_product_test``: ``<A x, y> = <x, A^H y>``.
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

    @property
    def N(self) -> LinearOperator:  # noqa: N802 - the conventional name for the normal operator
        """``A^H A`` as an operator (forward and adjoint both ``self.normal``)."""
        return _Normal(self)

    def __matmul__(self, other: LinearOperator) -> LinearOperator:
        return _Composition(self, other)

    def __mul__(self, scale: float | complex | torch.Tensor) -> LinearOperator:
        return _Scaled(self, scale)

    __rmul__ = __mul__

    def __neg__(self) -> LinearOperator:
        return _Scaled(self, -1.0)

    def __add__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return _Sum(self, other)

    def __sub__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return _Sum(self, _Scaled(other, -1.0))


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
    """``I x = x`` (returns its input, not a copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Multiply(LinearOperator):
    """Diagonal operator ``x -> w x`` (elementwise, ``w`` broadcast); adjoint ``y -> conj(w) y``, normal ``|w|^2 x``.

    ``w`` must broadcast to the input's shape without enlarging it (the adjoint does not sum over broadcast axes).
    """

    def __init__(self, weights: torch.Tensor):
        self.weights = weights
        self._conj = weights.conj().resolve_conj() if weights.is_complex() else weights
        self._abs2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y * self._conj

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        if self._abs2 is None:
            w = self.weights
            self._abs2 = w.real.square() + w.imag.square() if w.is_complex() else w * w
        return x * self._abs2


class _Adjoint(LinearOperator):
    def __init__(self, op: LinearOperator):
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.forward(y)

    @property
    def H(self) -> LinearOperator:  # noqa: N802
        return self.op


class _Normal(LinearOperator):
    def __init__(self, op: LinearOperator):
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.normal(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.normal(y)

    @property
    def H(self) -> LinearOperator:  # noqa: N802
        return self


class _Composition(LinearOperator):
    def __init__(self, outer: LinearOperator, inner: LinearOperator):
        self.outer, self.inner = outer, inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer.forward(self.inner.forward(x))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        # (B C)^H (B C) = C^H (B^H B) C: keeps the outer operator's fast normal form
        return self.inner.adjoint(self.outer.normal(self.inner.forward(x)))


class _Scaled(LinearOperator):
    def __init__(self, op: LinearOperator, scale: float | complex | torch.Tensor):
        self.op, self.scale = op, scale
        if isinstance(scale, torch.Tensor):
            self._conj = scale.conj()
        else:
            self._conj = scale.conjugate() if isinstance(scale, complex) else scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.op.forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._conj * self.op.adjoint(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return abs(self.scale) ** 2 * self.op.normal(x)


class _Sum(LinearOperator):
    def __init__(self, first: LinearOperator, second: LinearOperator):
        self.first, self.second = first, second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.first.forward(x) + self.second.forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.first.adjoint(y) + self.second.adjoint(y)


def as_operator(op: LinearOperator | Callable[[torch.Tensor], torch.Tensor]) -> LinearOperator:
    """``op`` itself, or a callable wrapped as a self-adjoint operator (for Hermitian maps such as ``A^H A``)."""
    if isinstance(op, LinearOperator):
        return op
    if callable(op):
        return FunctionOperator(op, op)
    raise TypeError(f"expected a LinearOperator or a callable, got {type(op).__name__}")


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real part of the inner product ``<a, b> = sum conj(a) b`` over all elements."""
    return torch.sum(a.conj() * b).real if a.is_complex() else torch.sum(a * b)


def dot_product_test(op: LinearOperator, x: torch.Tensor, y: torch.Tensor) -> float:
    """Relative mismatch ``|<A x, y> - <x, A^H y>| / |<A x, y>|``; about 1e-6 for a correct adjoint."""
    lhs = torch.sum(op.forward(x).conj() * y)
    rhs = torch.sum(x.conj() * op.adjoint(y))
    return float((lhs - rhs).abs() / lhs.abs().clamp_min(1e-30))
