"""A Gaussian image distribution whose denoiser and measurement posterior are known exactly (a test bed).

Data ``x0 ~ N(m, C)`` on images of a small ``shape`` (dimension ``d = prod(shape)``, up to a few thousand), with
``C = U diag(lam) U^T`` kept as its eigendecomposition. Under the VP forward process
``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps``, ``x_t ~ N(sqrt(abar) m, abar C + (1 - abar) I)`` and

    E[x0 | x_t] = m + sqrt(abar) C (abar C + (1 - abar) I)^{-1} (x_t - sqrt(abar) m)
                = m + U diag(sqrt(abar) lam / (abar lam + 1 - abar)) U^T (x_t - sqrt(abar) m),
    eps_hat     = (x_t - sqrt(abar) E[x0 | x_t]) / sqrt(1 - abar),

so ``GaussianDenoiser`` is the exact minimiser of the denoising loss: a perfectly trained network.
For a linear measurement ``y = A x0 + n``, ``n ~ N(0, s^2 I)`` (real; complex data count as real and imaginary
parts, each with standard deviation ``s``), the posterior is Gaussian with

    mean = m + C A^T (A C A^T + s^2 I)^{-1} (y - A m),    cov = C - C A^T (A C A^T + s^2 I)^{-1} A C.

``dense_matrix`` turns a ``LinearOperator`` on images into that real matrix ``A`` (rows: measurement elements, a
complex one as its real then imaginary part, in the order of ``real_vector``).

Complex images (MRI) are real vectors of ``2 H W`` entries: a prior of shape ``(2, H, W)`` holds the real then the
imaginary channel. Under the EDM (variance exploding) noise ``x_sigma = x0 + sigma n``, ``n`` standard normal in each
real channel, ``x_sigma ~ N(m, C + sigma^2 I)`` and

    D(x_sigma; sigma) = E[x0 | x_sigma] = m + C (C + sigma^2 I)^{-1} (x_sigma - m)
                      = m + U diag(lam / (lam + sigma^2)) U^T (x_sigma - m),

``GaussianEDMDenoiser``, the exact EDM denoiser (equal to ``x0_mean`` at ``abar = 1 / (1 + sigma^2)`` applied to
``sqrt(abar) x_sigma``). ``complex_dense_matrix`` is the real matrix of a complex-linear operator in that layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from models.diffusion.schedule import VPSchedule
from models.physics.linop import LinearOperator


def grid_coordinates(shape: Sequence[int]) -> torch.Tensor:
    """Pixel-centre coordinates ``(d, len(shape))`` (float64, in pixels, row-major order)."""
    axes = [torch.arange(n, dtype=torch.float64) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))


class GaussianPrior:
    """``N(mean, cov)`` on images of ``shape``; ``cov`` symmetric positive semi-definite ``(d, d)``."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        self.shape = tuple(mean.shape)
        self.dim = math.prod(self.shape)
        if cov.shape != (self.dim, self.dim):
            raise ValueError(f"cov must be ({self.dim}, {self.dim}) for a mean of shape {self.shape}")
        self.mean = mean.to(torch.float64)
        self.cov = 0.5 * (cov + cov.T).to(torch.float64)
        lam, vecs = torch.linalg.eigh(self.cov)
        if float(lam.min()) < -1e-8 * float(lam.max()):
            raise ValueError("cov is not positive semi-definite")
        self.eigvals, self.eigvecs = lam.clamp_min(0.0), vecs

    @classmethod
    def stationary(cls, shape: Sequence[int], *, std: float = 0.3, length: float = 2.0, nugget: float = 0.05,
                   mean_amplitude: float = 0.5) -> GaussianPrior:
        """Smooth images: squared-exponential covariance ``std^2 exp(-|r_i - r_j|^2 / (2 length^2))`` plus white
        ``nugget^2 I``, about a Gaussian bump ``mean_amplitude exp(-|r - c|^2 / (2 (min(shape) / 4)^2))``."""
        shape = tuple(int(n) for n in shape)
        r = grid_coordinates(shape)
        dist2 = torch.cdist(r, r).square()
        cov = std**2 * torch.exp(-dist2 / (2 * length**2)) + nugget**2 * torch.eye(len(r), dtype=torch.float64)
        centre = torch.tensor([(n - 1) / 2 for n in shape], dtype=torch.float64)
        width = min(shape) / 4
        mean = mean_amplitude * torch.exp(-(r - centre).square().sum(-1) / (2 * width**2))
        return cls(mean.reshape(shape), cov)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact draws ``(n, *shape)`` (float64): ``m + U diag(sqrt(lam)) z``."""
        z = torch.randn((n, self.dim), generator=generator, dtype=torch.float64)
        x = self.mean.reshape(-1) + (z * self.eigvals.sqrt()) @ self.eigvecs.T
        return x.reshape(n, *self.shape)

    def x0_mean(self, x_t: torch.Tensor, abar: float) -> torch.Tensor:
        """``E[x0 | x_t]`` for ``x_t`` of shape ``(..., *shape)`` (float64)."""
        flat = x_t.to(torch.float64).reshape(-1, self.dim)
        m = self.mean.reshape(-1)
        gain = math.sqrt(abar) * self.eigvals / (abar * self.eigvals + 1.0 - abar)
        x0 = m + ((flat - math.sqrt(abar) * m) @ self.eigvecs * gain) @ self.eigvecs.T
        return x0.reshape(x_t.shape)

    def marginal_cov(self, abar: float) -> torch.Tensor:
        """Covariance of ``x_t``: ``abar C + (1 - abar) I``."""
        return abar * self.cov + (1.0 - abar) * torch.eye(self.dim, dtype=torch.float64)

    def posterior(self, A: LinearOperator | torch.Tensor, y: torch.Tensor,  # noqa: N803 - math name
                  noise_std: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean ``(*shape)`` and covariance ``(d, d)`` of ``x0`` given ``y = A x0 + n`` (module docstring).

        ``A``: an operator on images of ``shape`` or its real matrix ``(m, d)``; ``y``: the measurement as ``A``
        returns it (or already as ``real_vector``)."""
        mat = dense_matrix(A, self.shape) if isinstance(A, LinearOperator) else A.to(torch.float64)
        yv = real_vector(y)
        if yv.numel() != mat.shape[0]:
            raise ValueError(f"y has {yv.numel()} real elements, A has {mat.shape[0]} rows")
        m = self.mean.reshape(-1)
        ca = self.cov @ mat.T                                            # C A^T, (d, m)
        gram = mat @ ca + noise_std**2 * torch.eye(mat.shape[0], dtype=torch.float64)
        mean = m + ca @ torch.linalg.solve(gram, yv - mat @ m)
        cov = self.cov - ca @ torch.linalg.solve(gram, ca.T)
        return mean.reshape(self.shape), 0.5 * (cov + cov.T)


class GaussianDenoiser:
    """The exact ``Denoiser`` of a ``GaussianPrior`` under ``schedule``: ``x_t`` ``(N, *channels, ...)`` with
    ``prod`` of the non-batch axes ``= d``; ``eps_hat`` in ``x_t``'s dtype. ``calls`` counts the images denoised."""

    def __init__(self, prior: GaussianPrior, schedule: VPSchedule):
        self.prior = prior
        self.abars = [float(a) for a in schedule.alphas_cumprod]
        self.calls = 0

    def __call__(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        if math.prod(x_t.shape[1:]) != self.prior.dim:
            raise ValueError(f"each item of x_t {tuple(x_t.shape)} must have {self.prior.dim} elements")
        abar = self.abars[int(t)]
        x0 = self.prior.x0_mean(x_t.reshape(x_t.shape[0], *self.prior.shape), abar).reshape(x_t.shape)
        eps = (x_t.to(torch.float64) - math.sqrt(abar) * x0) / math.sqrt(1.0 - abar)
        self.calls += x_t.shape[0]
        return eps.to(x_t.dtype)


class GaussianEDMDenoiser:
    """The exact EDM denoiser ``D(x; sigma)`` of a ``GaussianPrior`` of shape ``(2, H, W)`` (real, imaginary) for
    complex images ``x`` ``(N, H, W)`` (module docstring); differentiable (autograd passes through), computed in
    float64 and returned in ``x``'s dtype. ``calls`` counts the images denoised."""

    def __init__(self, prior: GaussianPrior):
        if len(prior.shape) != 3 or prior.shape[0] != 2:
            raise ValueError(f"a complex-image prior has shape (2, H, W) (real, imaginary), got {prior.shape}")
        self.prior = prior
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        if not x.is_complex() or tuple(x.shape[1:]) != self.prior.shape[1:] or x.ndim != 3:
            raise ValueError(f"x must be complex (N, {self.prior.shape[1]}, {self.prior.shape[2]}), "
                             f"got {x.dtype} {tuple(x.shape)}")
        n = x.shape[0]
        flat = torch.stack((x.real, x.imag), dim=1).to(torch.float64).reshape(n, self.prior.dim)
        m, vecs = self.prior.mean.reshape(-1), self.prior.eigvecs
        gain = self.prior.eigvals / (self.prior.eigvals + float(sigma) ** 2)
        out = (m + ((flat - m) @ vecs * gain) @ vecs.T).reshape(n, *self.prior.shape)
        self.calls += n
        return torch.complex(out[:, 0], out[:, 1]).to(x.dtype)


def real_vector(y: torch.Tensor) -> torch.Tensor:
    """``y`` flattened to a real float64 vector (complex elements as real then imaginary part)."""
    y = torch.view_as_real(y.resolve_conj()) if y.is_complex() else y
    return y.reshape(-1).to(torch.float64)


def dense_matrix(A: LinearOperator, shape: Sequence[int]) -> torch.Tensor:  # noqa: N803 - math name
    """The real ``(m, d)`` matrix of ``A`` on images of ``shape``, by applying it to the unit images (float32
    operators are applied in float32; ``A`` must act on a leading batch axis one image at a time)."""
    d = math.prod(shape)
    basis = torch.eye(d, dtype=torch.float32).reshape(d, *shape)
    out = A.forward(basis)
    out = torch.view_as_real(out.resolve_conj()) if out.is_complex() else out
    return out.reshape(d, -1).T.to(torch.float64)


def complex_dense_matrix(A: LinearOperator, shape: Sequence[int]) -> torch.Tensor:  # noqa: N803 - math name
    """The real ``(m, 2 d)`` matrix of a complex-linear ``A`` on complex images of ``shape`` (``d = prod(shape)``):
    columns are the real channel then the imaginary channel (a ``(2, *shape)`` prior's order), rows the measurement
    in ``real_vector`` order. ``A`` is applied in complex64 to a leading batch of unit images."""
    d = math.prod(shape)
    unit = torch.eye(d, dtype=torch.complex64).reshape(d, *shape)
    cols = []
    for basis in (unit, 1j * unit):
        out = torch.view_as_real(A.forward(basis).resolve_conj())
        cols.append(out.reshape(d, -1).T.to(torch.float64))
    return torch.cat(cols, dim=1)
