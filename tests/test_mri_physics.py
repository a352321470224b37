import numpy as np
import pytest
import torch

from models.physics.linop import dot_product_test
from models.physics.mri import SenseOperator, expand, fft2c, fft2c_matmul, ifft2c, ifft2c_matmul, reduce
from models.physics.mri.fft import centered_dft_matrix, fft2c_real
from models.physics.mri.masks import (
    count_center_lines,
    equispaced_column_mask,
    make_mask,
    mask_from_kspace,
    poisson_disc_mask,
    random_column_mask,
)
from models.physics.mri.sensitivity import acs_maps, espirit_maps


def _crandn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))


@pytest.mark.parametrize("shape", [(4, 16, 16), (2, 3, 17, 12), (1, 64, 45)])
def test_fft_is_centered_orthonormal_and_invertible(shape):
    x = _crandn(*shape)
    k = fft2c(x)
    # orthonormal: energy preserved
    assert torch.allclose(torch.linalg.vector_norm(k), torch.linalg.vector_norm(x), rtol=1e-5)
    assert torch.allclose(ifft2c(k), x, atol=1e-5)
    # centered: a constant image has all its energy at index (H//2, W//2)
    ones = torch.ones(shape[-2:], dtype=torch.complex64)
    kc = fft2c(ones).abs()
    assert float(kc[shape[-2] // 2, shape[-1] // 2]) == pytest.approx(np.sqrt(shape[-2] * shape[-1]), rel=1e-5)
    assert float(kc.sum()) == pytest.approx(float(kc.max()), rel=1e-4)
    # matches numpy's definition
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    assert np.allclose(k.numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("shape", [(3, 16, 16), (2, 2, 33, 20), (1, 218, 170), (1, 640, 7)])
def test_matmul_fft_equals_torch_fft(shape):
    x = _crandn(*shape, seed=1)
    xr = torch.view_as_real(x)
    k_ref = fft2c(x)
    k_mm = torch.view_as_complex(fft2c_matmul(xr).contiguous())
    scale = float(k_ref.abs().max())
    assert float((k_mm - k_ref).abs().max()) / scale < 1e-5
    back = torch.view_as_complex(ifft2c_matmul(fft2c_matmul(xr)).contiguous())
    assert float((back - x).abs().max()) < 1e-4
    assert torch.allclose(torch.view_as_complex(fft2c_real(xr)), k_ref)


def test_dft_matrix_is_unitary_for_large_sizes():
    re, im = centered_dft_matrix(640)
    f = torch.complex(re.double(), im.double())
    eye = f.conj().T @ f
    assert float((eye - torch.eye(640, dtype=eye.dtype)).abs().max()) < 1e-5


def test_coil_reduce_is_adjoint_of_expand():
    maps = _crandn(6, 20, 24, seed=2)
    x, z = _crandn(20, 24, seed=3), _crandn(6, 20, 24, seed=4)
    lhs = torch.sum(expand(x, maps).conj() * z)
    rhs = torch.sum(x.conj() * reduce(z, maps))
    assert abs(complex(lhs - rhs)) / abs(complex(lhs)) < 1e-5


@pytest.mark.parametrize("mask_kind", ["random", "poisson"])
def test_sense_operator_passes_dot_product_test(mask_kind):
    maps = _crandn(2, 8, 32, 32, seed=5)
    mask = torch.from_numpy(make_mask(mask_kind, (32, 32), 4, seed=1).mask)
    op = SenseOperator(maps, mask)
    assert dot_product_test(op, _crandn(2, 32, 32, seed=6), _crandn(2, 8, 32, 32, seed=7)) < 1e-5
    x = _crandn(2, 32, 32, seed=8)
    assert torch.allclose(op.normal(x), op.adjoint(op.forward(x)), atol=1e-4)


@pytest.mark.parametrize("maker", [random_column_mask, equispaced_column_mask])
@pytest.mark.parametrize("accel,cf", [(4, 0.08), (8, 0.04)])
def test_column_masks_hit_acceleration_and_keep_centre(maker, accel, cf):
    width = 368
    m = maker(width, accel, cf, seed=3)
    assert m.mask.shape == (1, width)
    assert m.num_low_frequencies == round(width * cf)
    assert count_center_lines(m.mask[0]) >= m.num_low_frequencies
    assert abs(m.acceleration - accel) / accel < 0.2
    # seeded: same seed same mask, other seed other mask (random kind)
    assert np.array_equal(maker(width, accel, cf, seed=3).mask, m.mask)


def test_random_mask_depends_on_seed():
    a = random_column_mask(256, 4, 0.08, seed=0).mask
    b = random_column_mask(256, 4, 0.08, seed=1).mask
    assert not np.array_equal(a, b)


def test_poisson_mask_has_calibration_square():
    m = poisson_disc_mask((64, 64), 4, calib=12, seed=0)
    assert m.mask.shape == (64, 64)
    assert m.mask[26:38, 26:38].all()
    assert 2.5 < m.acceleration < 6


def test_mask_errors_are_clear():
    with pytest.raises(ValueError, match="acceleration"):
        random_column_mask(64, 0.5)
    with pytest.raises(ValueError, match="centre fraction"):
        random_column_mask(64, 8, 0.5)
    with pytest.raises(ValueError, match="unknown mask kind"):
        make_mask("spiral", (8, 8), 2)
    with pytest.raises(ValueError, match="all zeros"):
        mask_from_kspace(np.zeros((2, 8, 8), np.complex64))


def test_mask_recovered_from_zero_columns():
    m = random_column_mask(96, 4, 0.08, seed=2)
    k = _crandn(3, 40, 96).numpy() * m.mask
    got = mask_from_kspace(k)
    assert np.array_equal(got.mask, m.mask)
    assert got.num_low_frequencies >= m.num_low_frequencies


def _birdcage_kspace(n=64, coils=8):
    import sigpy
    import sigpy.mri

    img = sigpy.shepp_logan((n, n)).astype(np.complex64)
    maps = sigpy.mri.birdcage_maps((coils, n, n)).astype(np.complex64)
    return img, maps, fft2c(torch.from_numpy(maps * img)).numpy()


@pytest.mark.parametrize("estimator", [acs_maps, espirit_maps])
def test_sensitivity_maps_normalised_and_explain_the_coils(estimator):
    img, true_maps, k = _birdcage_kspace()
    maps = estimator(k, 20)
    support = np.abs(img) > 0.05
    norm = (np.abs(maps) ** 2).sum(0)
    assert np.allclose(norm[support], 1, atol=1e-3)
    # coil images are explained by the maps: S (S^H z) ~ z inside the object
    z = ifft2c(torch.from_numpy(k)).numpy()
    combined = (maps.conj() * z).sum(0)
    resid = np.linalg.norm((maps * combined - z)[:, support]) / np.linalg.norm(z[:, support])
    assert resid < 0.05
