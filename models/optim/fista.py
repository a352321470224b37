"""Accelerated proximal gradient methods for ``min_x f(x) + g(x)`` with smooth ``f`` and prox-friendly ``g``.

Usually ``f = 1/2 ||A x - y||^2``: the caller passes the operator ``A`` and the data ``y`` and the gradient is
``A^H A x - A^H y`` (through ``A.normal``, so fast normal forms are kept; ``A^H y`` is computed once). For any other
smooth ``f`` pass the callable ``gradient(x) = grad f(x)`` as ``A`` and ``y=None``.
``prox(v, t) = argmin_z g(z) + ||z - v||^2 / (2 t)``; the step ``t`` should be at most ``1 / L`` with ``L`` the
Lipschitz constant of ``grad f`` (the largest eigenvalue of ``A^H A``, see ``optim.cg.max_eigenvalue``).

* ``ista``:   ``x+ = prox(x - t grad f(x), t)``
* ``fista``:  Beck & Teboulle (2009): the prox-gradient step is taken at the extrapolated point
  ``z = x_k + (theta_{k-1} - 1) / theta_k (x_k - x_{k-1})``, ``theta_k = (1 + sqrt(1 + 4 theta_{k-1}^2)) / 2``.
* ``pogm``:   the proximal optimised gradient method (Taylor, Hendrickx & Glineur 2017; Kim & Fessler
  2018), about twice as fast as FISTA in the worst case; its last iteration uses the larger final
  momentum factor.

``restart=True`` resets the momentum when the objective-free gradient test
``<z - x+, x+ - x> > 0`` fires (O'Donoghue & Candes 2015), which helps when ``g`` changes between
iterations (e.g. randomly shifted wavelets).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from models.optim.prox import soft_threshold
from models.physics.linop import LinearOperator

Tensor = torch.Tensor
METHODS = ("ista", "fista", "pogm")
Gradient = LinearOperator | Callable[[Tensor], Tensor]

__all__ = ["METHODS", "fista", "gradient_of", "proximal_gradient", "soft_threshold"]


def _real_inner(a: Tensor, b: Tensor) -> float:
    return float((a.conj() * b).real.sum()) if a.is_complex() else float((a * b).sum())


def gradient_of(A: Gradient, y: Tensor | None) -> Callable[[Tensor], Tensor]:  # noqa: N803 - math name
    """``x -> A^H A x - A^H y`` for an operator ``A`` (``A^H y`` computed once), or ``A`` itself if it is a callable
    gradient (then ``y`` must be None)."""
    if isinstance(A, LinearOperator):
        if y is None:
            raise ValueError("proximal gradient with an operator needs the data y")
        aty = A.adjoint(y)
        return lambda x: A.normal(x) - aty
    if not callable(A):
        raise TypeError(f"expected a LinearOperator or a gradient callable, got {type(A).__name__}")
    if y is not None:
        raise ValueError("y must be None when a gradient callable is passed")
    return A


def proximal_gradient(A: Gradient, y: Tensor | None, prox: Callable[[Tensor, float], Tensor],  # noqa: N803
                      x0: Tensor, step: float, max_iter: int, method: str = "fista", restart: bool = False,
                      callback: Callable[[int, int], None] | None = None) -> Tensor:
    """Minimise ``1/2 ||A x - y||^2 + g(x)`` (or ``f + g`` with ``A`` the gradient of ``f``, ``y=None``) from ``x0``
    with ``max_iter`` iterations of ``method`` (ista, fista, pogm).

    ``callback(iteration, total)`` is called after each iteration (1-based).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not step > 0:
        raise ValueError(f"step must be positive, got {step}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    gradient = gradient_of(A, y)
    x = x0.clone()
    if method == "pogm":
        return _pogm(gradient, prox, x, step, max_iter, restart, callback)
    x_prev = x
    theta = 1.0
    for it in range(max_iter):
        if method == "ista":
            z = x
        else:
            theta_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * theta**2))
            z = x + ((theta - 1.0) / theta_new) * (x - x_prev)
            theta = theta_new
        x_new = prox(z - step * gradient(z), step)
        if restart and method == "fista" and _real_inner(z - x_new, x_new - x) > 0:
            theta = 1.0
        x_prev, x = x, x_new
        if callback is not None:
            callback(it + 1, max_iter)
    return x


def _pogm(gradient, prox, x, step, max_iter, restart, callback):
    # notation of Kim & Fessler (2018), Algorithm 3
    w_prev = x
    z = x
    theta = 1.0
    gamma = 1.0
    for it in range(max_iter):
        last = it == max_iter - 1
        theta_new = 0.5 * (1.0 + math.sqrt((8.0 if last else 4.0) * theta**2 + 1.0))
        gamma_new = step * (2.0 * theta + theta_new - 1.0) / theta_new
        w = x - step * gradient(x)
        z = (w + ((theta - 1.0) / theta_new) * (w - w_prev) + (theta / theta_new) * (w - x)
             + ((theta - 1.0) * step / (gamma * theta_new)) * (z - x))
        x_new = prox(z, gamma_new)
        if restart and _real_inner(z - x_new, x_new - x) > 0:  # hypothetical gradient restart
            theta_new, gamma_new = 1.0, step
        x, w_prev, theta, gamma = x_new, w, theta_new, gamma_new
        if callback is not None:
            callback(it + 1, max_iter)
    return x


def fista(A: Gradient, y: Tensor | None, prox: Callable[[Tensor, float], Tensor], x0: Tensor,  # noqa: N803
          step: float, max_iter: int, restart: bool = False,
          callback: Callable[[int, int], None] | None = None) -> Tensor:
    """FISTA, a shorthand for ``proximal_gradient(..., method="fista")``."""
    return proximal_gradient(A, y, prox, x0, step, max_iter, "fista", restart, callback)
