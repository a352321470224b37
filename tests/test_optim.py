"""Solvers taking operators: CG, CGLS, ADMM (TV), proximal gradient, power iteration, on small known problems."""

import pytest
import torch

from models.classical.tv import admm_tv
from models.optim.admm import admm
from models.optim.cg import conjugate_gradient, max_eigenvalue
from models.optim.cgls import cgls
from models.optim.fista import proximal_gradient
from models.optim.prox import soft_threshold
from models.physics.finite_difference import FiniteDifference
from models.physics.linop import FunctionOperator, Identity, LinearOperator, Multiply


class Dense(LinearOperator):
    """A dense (m, n) matrix acting on the last axis."""

    def __init__(self, m: torch.Tensor):
        self.m = m

    def forward(self, x):
        return x @ self.m.T

    def adjoint(self, y):
        return y @ self.m.conj()


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_conjugate_gradient_operator_and_callable(dtype):
    g = _gen()
    m = torch.randn(12, 8, generator=g, dtype=torch.float64).to(dtype)
    if dtype.is_complex:
        m = m + 1j * torch.randn(12, 8, generator=g, dtype=torch.float64)
    A = Dense(m)  # noqa: N806
    b = torch.randn(3, 8, generator=g, dtype=torch.float64).to(dtype)
    lam = 0.1
    exact = torch.linalg.solve(m.conj().T @ m + lam * torch.eye(8, dtype=dtype), b.T).T
    x_op = conjugate_gradient(A.N + lam * Identity(), b, max_iter=8, batch_dims=1)
    x_fn = conjugate_gradient(lambda v: A.normal(v) + lam * v, b, max_iter=8, batch_dims=1)
    assert torch.allclose(x_op, exact, atol=1e-8) and torch.allclose(x_fn, x_op)
    # a tolerance stops early, and an exact start stays put
    assert torch.allclose(conjugate_gradient(A.N + lam * Identity(), b, x0=exact, max_iter=3, tol=1e-6,
                                             batch_dims=1), exact)


def test_batched_cg_gives_each_system_its_own_steps():
    # two diagonal systems with very different spectra: batched == one at a time
    d = torch.stack([torch.linspace(1, 2, 10), torch.linspace(1, 1000, 10)]).double()
    b = torch.ones(2, 10, dtype=torch.float64)
    N = Multiply(d)  # noqa: N806
    both = conjugate_gradient(N, b, max_iter=6, batch_dims=1)
    one = torch.stack([conjugate_gradient(Multiply(d[i]), b[i], max_iter=6) for i in range(2)])
    assert torch.allclose(both, one)
    joint = conjugate_gradient(N, b, max_iter=6, batch_dims=0)
    assert not torch.allclose(joint, one)


def test_max_eigenvalue_of_an_operator():
    m = torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64))
    A = Dense(m)  # noqa: N806
    assert max_eigenvalue(A.N, torch.zeros(3, dtype=torch.float64), iters=60) == pytest.approx(9.0, rel=1e-6)
    assert max_eigenvalue(A.normal, torch.zeros(3, dtype=torch.float64), iters=60) == pytest.approx(9.0, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_cgls_matches_lstsq_per_batch(dtype):
    g = _gen(1)
    m = torch.randn(30, 10, generator=g, dtype=torch.float64).to(dtype)
    if dtype.is_complex:
        m = m + 1j * torch.randn(30, 10, generator=g, dtype=torch.float64)
    y = torch.randn(2, 30, generator=g, dtype=torch.float64).to(dtype)
    y[1] *= 1e3  # batched: the second problem is 1000x larger and still gets its own steps
    ls = torch.linalg.lstsq(m, y.T).solution.T
    calls = []
    x = cgls(Dense(m), y, iterations=10, batch_dims=1, progress=lambda i, n: calls.append((i, n)))
    assert calls[-1] == (10, 10)
    assert float(torch.linalg.vector_norm(x - ls) / torch.linalg.vector_norm(ls)) < 1e-8
    # from a warm start at the solution nothing moves
    assert torch.allclose(cgls(Dense(m), y, x0=ls, iterations=3, batch_dims=1), ls)


def test_admm_l1_with_identity_is_soft_threshold_and_nonneg_is_a_clamp():
    y = torch.randn(50, generator=_gen(2), dtype=torch.float64)
    lam = 0.4
    x = admm(Identity(), y, Identity(), lambda v, t: soft_threshold(v, lam * t), rho=1.0, iterations=200,
             cg_iterations=2)
    assert torch.allclose(x, soft_threshold(y, lam), atol=1e-8)
    zero = lambda v, t: v  # noqa: E731 - g = 0
    assert torch.allclose(admm(Identity(), y, Identity(), zero, rho=1.0, iterations=100, nonneg=True,
                               cg_iterations=2), y.clamp_min(0), atol=1e-6)


def test_admm_tv_1d_step_has_the_closed_form():
    # min 1/2 ||x - y||^2 + lam TV(x) for a step of height h between plateaus of n1 and n2 samples:
    # the plateaus move towards each other by lam / n1 and lam / n2 (while the step survives)
    n1, n2, h, lam = 12, 20, 1.0, 1.5
    y = torch.cat([torch.zeros(n1), h * torch.ones(n2)]).double()
    expected = torch.cat([torch.full((n1,), lam / n1), torch.full((n2,), h - lam / n2)]).double()
    D = FiniteDifference((-1,))  # noqa: N806
    x = admm(Identity(), y, D, lambda v, t: soft_threshold(v, lam * t), rho=2.0, iterations=300, cg_iterations=10)
    assert torch.allclose(x, expected, atol=1e-6)
    # the same through the generic ADMM-TV on a (1, n) image (the isotropic pair degenerates to |D_x|)
    x2 = admm_tv(Identity(), y[None], lam=lam, rho=2.0, iterations=300, cg_iterations=10)
    assert torch.allclose(x2[0], expected, atol=1e-6)


def _blocks(n=32):
    img = torch.zeros(n, n, dtype=torch.float64)
    img[4:20, 6:14] = 1.0
    img[10:28, 18:30] = 0.6
    img[22:30, 3:12] = 0.3
    return img


def test_admm_tv_2d_recovers_a_piecewise_constant_image_from_half_its_pixels():
    img = _blocks()
    keep = (torch.rand(img.shape, generator=_gen(3)) < 0.5).double()
    A = Multiply(keep)  # noqa: N806
    y = A.forward(img)
    seen = []
    x = admm_tv(A, y, lam=1e-2, rho=0.05, iterations=150, cg_iterations=5, nonneg=True,
                progress=lambda i, n: seen.append(i))
    assert seen == list(range(1, 151))
    err = float(torch.linalg.vector_norm(x - img) / torch.linalg.vector_norm(img))
    base = float(torch.linalg.vector_norm(y - img) / torch.linalg.vector_norm(img))  # zeros where missing
    # measured: 0.100 (the converged TV inpainting rounds the corners), zero-filled 0.70
    assert base > 0.6 and err < 0.12, (err, base)
    assert float(x.min()) >= 0


def test_admm_tv_2d_slices_are_independent_and_3d_couples_them():
    img = _blocks(16)
    vol = torch.stack([img, 0.1 * img.T, img])
    noisy = vol + 0.05 * torch.randn(vol.shape, generator=_gen(4), dtype=torch.float64)
    kw = dict(lam=0.05, rho=1.0, iterations=30, cg_iterations=4)
    together = admm_tv(Identity(), noisy, **kw)
    alone = torch.stack([admm_tv(Identity(), noisy[i], **kw) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-10)
    # 3D: the z term pulls the middle slice towards its neighbours; lam_z = 0 keeps them apart
    v3 = admm_tv(Identity(), noisy, volume=True, lam_z=0.5, **kw)
    v0 = admm_tv(Identity(), noisy, volume=True, lam_z=0.0, **kw)
    gap = lambda v: float((v[1] - v[0]).abs().mean())  # noqa: E731
    assert gap(v3) < 0.5 * gap(v0)
    with pytest.raises(ValueError, match="slice_axis"):
        admm_tv(Identity(), noisy, volume=True, slice_axis=-1, **kw)


@pytest.mark.parametrize("method", ["ista", "fista", "pogm"])
def test_proximal_gradient_takes_an_operator(method):
    g = _gen(5)
    m = torch.randn(40, 15, generator=g, dtype=torch.float64)
    y = torch.randn(40, generator=g, dtype=torch.float64)
    A = Dense(m)  # noqa: N806
    step = 1.0 / max_eigenvalue(A.N, torch.zeros(15, dtype=torch.float64), iters=100)
    x0 = torch.zeros(15, dtype=torch.float64)
    identity_prox = lambda v, t: v  # noqa: E731
    x = proximal_gradient(A, y, identity_prox, x0, 0.99 * step, 3000 if method == "ista" else 600, method=method)
    assert torch.allclose(x, torch.linalg.lstsq(m, y).solution, atol=1e-6)
    # the operator form is the callable-gradient form with grad = A^H A x - A^H y, step for step
    prox = lambda v, t: soft_threshold(v, 0.5 * t)  # noqa: E731
    by_op = proximal_gradient(A, y, prox, x0, step, 25, method=method)
    by_fn = proximal_gradient(lambda v: m.T @ (m @ v) - m.T @ y, None, prox, x0, step, 25, method=method)
    assert torch.allclose(by_op, by_fn, atol=1e-12)


def test_proximal_gradient_on_a_padded_operator():
    # solve on a zero-padded u with A_pad = A crop (what l1_wavelet does): same minimiser, zero padding kept
    g = _gen(6)
    m = torch.randn(20, 6, generator=g, dtype=torch.float64)
    y = torch.randn(20, generator=g, dtype=torch.float64)
    crop = FunctionOperator(lambda u: u[:6], lambda x: torch.cat([x, x.new_zeros(2)]))
    A_pad = Dense(m) @ crop  # noqa: N806
    step = 1.0 / float(torch.linalg.matrix_norm(m, 2)) ** 2
    u = proximal_gradient(A_pad, y, lambda v, t: v, torch.zeros(8, dtype=torch.float64), step, 400, method="fista")
    assert torch.allclose(u[:6], torch.linalg.lstsq(m, y).solution, atol=1e-10)
    assert torch.equal(u[6:], torch.zeros(2, dtype=torch.float64))
