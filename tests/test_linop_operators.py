"""The operator algebra and the operators built on it: every one passes the dot-product test, real and complex."""

import pytest
import torch

from models.optim.prox import group_soft_threshold, soft_threshold
from models.physics.finite_difference import FiniteDifference, forward_difference
from models.physics.linop import FunctionOperator, Identity, LinearOperator, Multiply, dot_product_test
from models.physics.mri import CoilExpand, FFT2c, Mask, SenseOperator, SoftSenseOperator
from models.physics.mri.coils import expand, reduce
from models.physics.mri.fft import fft2c, ifft2c

TOL = 1e-5


def _randn(*shape, complex_=True, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    re = torch.randn(shape, generator=g, dtype=dtype)
    return torch.complex(re, torch.randn(shape, generator=g, dtype=dtype)) if complex_ else re


def _dense(m: torch.Tensor) -> LinearOperator:
    """A dense matrix acting on vectors (last axis)."""
    return FunctionOperator(lambda x: x @ m.T, lambda y: y @ m.conj())


def _check(op: LinearOperator, x: torch.Tensor, y: torch.Tensor, tol: float = TOL) -> None:
    assert dot_product_test(op, x, y) < tol
    assert torch.allclose(op.N(x), op.adjoint(op.forward(x)), atol=1e-5 * float(x.abs().max()) + 1e-6)


# --------------------------------------------------------------------------- finite differences

@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("dims,shape", [((-2, -1), (3, 7, 9)), ((-3, -2, -1), (5, 7, 9)), ((-3,), (5, 7, 9)),
                                        ((0,), (6,)), ((1, 2), (2, 4, 5))])
def test_finite_difference_dot_test(dims, shape, complex_):
    op = FiniteDifference(dims)
    x = _randn(*shape, complex_=complex_)
    y = _randn(len(dims), *shape, complex_=complex_, seed=1)
    assert op.forward(x).shape == (len(dims), *shape)
    assert op.forward(x).dtype == x.dtype
    _check(op, x, y, 1e-12)


def test_finite_difference_values_and_norm():
    x = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]])
    d = FiniteDifference((-2, -1)).forward(x)
    assert torch.equal(d[0], torch.tensor([[2.0, 1.0, -1.0], [0.0, 0.0, 0.0]]))   # along rows, 0 at the last
    assert torch.equal(d[1], torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]))    # along columns
    assert torch.equal(forward_difference(torch.ones(1, 4), 0), torch.zeros(1, 4))  # a single index: no difference
    # ||D^H D|| <= 4 per axis, attained by the alternating image
    alt = (-1.0) ** (torch.arange(16)[:, None] + torch.arange(16)[None, :]).double()
    op = FiniteDifference((-2, -1))
    ratio = float(torch.linalg.vector_norm(op.N(alt)) / torch.linalg.vector_norm(alt))
    assert 7.0 < ratio <= 8.0
    with pytest.raises(ValueError, match="repeated"):
        FiniteDifference((0, 0))


# --------------------------------------------------------------------------- algebra

@pytest.mark.parametrize("complex_", [False, True])
def test_sum_composition_scaling_adjoint_normal(complex_):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(7, 5, generator=g, dtype=torch.float64)
    b = torch.randn(7, 5, generator=g, dtype=torch.float64)
    c = torch.randn(5, 4, generator=g, dtype=torch.float64)
    if complex_:
        a, b, c = a + 1j * torch.randn_like(a), b - 0.5j * a.real, c + 2j * c
    A, B, C = _dense(a), _dense(b), _dense(c)  # noqa: N806
    x, y, v = _randn(4, complex_=complex_), _randn(7, complex_=complex_, seed=1), _randn(5, complex_=complex_, seed=2)
    scale = (2.0 - 1.5j) if complex_ else -2.5
    cases = [(A + B, v, y, a + b), (A - B, v, y, a - b), (A @ C, x, y, a @ c), (scale * A, v, y, scale * a),
             (A * scale, v, y, scale * a), (-A, v, y, -a), (A.H, y, v, a.conj().T),
             (A.N, v, v, a.conj().T @ a), ((A + B).N + 0.5 * Identity(), v, v, (a + b).conj().T @ (a + b)
                                           + 0.5 * torch.eye(5, dtype=a.dtype)),
             ((A @ C).H @ (A @ C), x, x, (a @ c).conj().T @ (a @ c))]
    for op, u, w, m in cases:
        assert torch.allclose(op.forward(u), m @ u), op
        assert torch.allclose(op.adjoint(w), m.conj().T @ w), op
        assert torch.allclose(op.normal(u), m.conj().T @ (m @ u)), op
        _check(op, u, w, 1e-12)
    assert A.H.H is A and A.N.H is not None


def test_normal_keeps_a_subclass_fast_form():
    calls = []

    class Fast(Multiply):
        def normal(self, x):
            calls.append(1)
            return super().normal(x)

    w = _randn(6, seed=4)
    op = Identity() @ Fast(w)
    out = op.N(_randn(6, seed=5))
    assert calls == [] and out.shape == (6,)  # the composition's outer part is Identity: inner's forward/adjoint
    op2 = 2.0 * Fast(w)
    assert torch.allclose(op2.N(_randn(6, seed=5)), 4 * w.abs() ** 2 * _randn(6, seed=5))
    assert calls == [1]
    op3 = Fast(w) @ Identity()
    op3.N(_randn(6, seed=5))
    assert calls == [1, 1]


@pytest.mark.parametrize("complex_", [False, True])
def test_multiply_and_identity(complex_):
    w = _randn(1, 5, complex_=complex_)
    op = Multiply(w)
    x, y = _randn(3, 5, complex_=complex_, seed=1), _randn(3, 5, complex_=complex_, seed=2)
    assert torch.allclose(op.forward(x), w * x)
    assert torch.allclose(op.adjoint(y), w.conj() * y)
    assert torch.allclose(op.normal(x), (w.abs() ** 2) * x)
    _check(op, x, y, 1e-12)
    _check(Identity(), x, y, 1e-12)
    _check(op + Identity(), x, y, 1e-12)


# --------------------------------------------------------------------------- MRI operators

def _maps(shape, seed=0, sets=False):
    m = _randn(*shape, seed=seed, dtype=torch.float32)
    return m / torch.sqrt((m.abs() ** 2).sum(dim=(-4, -3) if sets else -3, keepdim=True))


@pytest.mark.parametrize("shape", [(2, 16, 12), (17, 9)])
def test_fft2c_operator(shape):
    op = FFT2c()
    x, y = _randn(*shape, dtype=torch.float32), _randn(*shape, seed=1, dtype=torch.float32)
    assert torch.equal(op.forward(x), fft2c(x)) and torch.equal(op.adjoint(y), ifft2c(y))
    assert torch.allclose(op.adjoint(op.forward(x)), x, atol=1e-5)
    assert dot_product_test(op, x, y) < TOL
    assert torch.equal(op.N(x), x)


def test_coil_expand_operator_single_and_sets():
    maps = _maps((2, 6, 10, 12))
    op = CoilExpand(maps)
    x, z = _randn(2, 10, 12, dtype=torch.float32), _randn(2, 6, 10, 12, seed=1, dtype=torch.float32)
    assert torch.equal(op.forward(x), expand(x, maps)) and torch.equal(op.adjoint(z), reduce(z, maps))
    _check(op, x, z)
    assert torch.allclose(op.N(x), x, atol=1e-5)  # normalised maps: E^H E = I
    sets = CoilExpand(_maps((2, 3, 6, 10, 12), sets=True), sets=True)
    xs = _randn(2, 3, 10, 12, seed=2, dtype=torch.float32)
    assert sets.forward(xs).shape == (2, 6, 10, 12)
    _check(sets, xs, z)


def test_mask_operator():
    mask = (torch.rand(1, 12, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    op = Mask(mask)
    k = _randn(3, 10, 12, dtype=torch.float32)
    assert torch.equal(op.forward(k), k * mask)
    assert torch.equal(op.N(k), k * mask)  # a 0/1 mask is a projection
    _check(op, k, _randn(3, 10, 12, seed=1, dtype=torch.float32))


@pytest.mark.parametrize("shape", [(3, 16, 20), (2, 4, 15, 12)])
def test_sense_is_the_composition_and_passes_dot_test(shape):
    maps = _maps(shape)
    mask = (torch.rand(1, shape[-1], generator=torch.Generator().manual_seed(1)) > 0.4).float()
    op = SenseOperator(maps, mask)
    composed = Mask(mask) @ FFT2c() @ CoilExpand(maps)
    x = _randn(*shape[:-3], *shape[-2:], seed=2, dtype=torch.float32)
    y = _randn(*shape, seed=3, dtype=torch.float32)
    assert torch.equal(op.forward(x), composed.forward(x))
    assert torch.equal(op.adjoint(y), composed.adjoint(y))
    assert dot_product_test(op, x, y) < TOL
    ref = composed.adjoint(composed.forward(x))
    assert torch.allclose(op.N(x), ref, atol=1e-5)  # fast (even) or shifted (odd) normal, same operator
    _check(op + 0.3 * Identity() @ op, x, y)  # sums of SENSE operators
    soft = SoftSenseOperator(_maps((2, *shape[-3:]), sets=True), mask)
    xs = _randn(2, *shape[-2:], seed=4, dtype=torch.float32)
    assert dot_product_test(soft, xs, _randn(*shape[-3:], seed=5, dtype=torch.float32)) < TOL
    assert torch.allclose(soft.N(xs), soft.adjoint(soft.forward(xs)), atol=1e-5)


# --------------------------------------------------------------------------- proximal maps

def test_soft_and_group_thresholds():
    v = torch.tensor([-3.0, -0.5, 0.2, 2.0])
    assert torch.equal(soft_threshold(v, 1.0), torch.tensor([-2.0, 0.0, 0.0, 1.0]))
    c = torch.tensor([3 + 4j, 0.3j])
    assert torch.allclose(soft_threshold(c, 1.0), torch.tensor([(3 + 4j) * 0.8, 0j]))
    # groups over axis 0: (3, 4) has norm 5 -> scaled by 1 - 1/5; (0.3, 0.4) is zeroed
    g = torch.tensor([[3.0, 0.3], [4.0, 0.4]])
    assert torch.allclose(group_soft_threshold(g, 1.0), torch.tensor([[2.4, 0.0], [3.2, 0.0]]))
    gc = torch.tensor([[3j, 0.3], [4.0, 0.4j]])
    assert torch.allclose(group_soft_threshold(gc, 1.0), gc * torch.tensor([0.8, 0.0]))
    per_column = group_soft_threshold(g, torch.tensor([0.0, 0.1]))
    assert torch.allclose(per_column[:, 0], g[:, 0]) and torch.allclose(per_column[:, 1], g[:, 1] * 0.8)
