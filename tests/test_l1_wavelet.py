"""Wavelet transform, proximal-gradient solvers, L1-wavelet reconstruction, torch ESPIRiT."""


import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from models.classical.l1_wavelet import l1_wavelet, lipschitz_bound, sense_operator
from models.classical.mri import cg_sense, zero_filled
from models.optim.fista import proximal_gradient
from models.optim.prox import soft_threshold
from models.physics.linop import FunctionOperator, Identity, dot_product_test
from models.physics.mri.fft import fft2c
from models.physics.mri.masks import random_column_mask
from models.physics.mri.sense import SenseOperator, SoftSenseOperator, fast_normal
from models.physics.mri.sensitivity import calibration_region, espirit_maps, espirit_torch
from models.physics.wavelet import WaveletTransform, default_levels, dwt2, idwt2


def _crandn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))


# --------------------------------------------------------------------------- wavelet

@pytest.mark.parametrize("wavelet", ["haar", "db2", "db4", "db8"])
@pytest.mark.parametrize("shape,levels", [((64, 64), 3), ((32, 48), 4), ((8, 8), 3), ((2, 4), 1)])
def test_dwt_is_orthonormal_and_inverted_by_its_adjoint(wavelet, shape, levels):
    x = _crandn(3, *shape)
    c = dwt2(x, levels, wavelet)
    assert c.shape == x.shape
    assert float(torch.linalg.vector_norm(c)) == pytest.approx(float(torch.linalg.vector_norm(x)), rel=1e-5)
    assert torch.allclose(idwt2(c, levels, wavelet), x, atol=1e-5)
    y = _crandn(3, *shape, seed=1)
    lhs = torch.sum(c.conj() * y)
    rhs = torch.sum(x.conj() * idwt2(y, levels, wavelet))
    assert float((lhs - rhs).abs() / lhs.abs()) < 1e-5


def test_dwt_matches_textbook_haar_and_sparsifies_constants():
    x = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    c = dwt2(x, 1, "haar")
    # LL of a 2x2 block is (sum of the block) / 2 for the orthonormal Haar pair
    assert torch.allclose(c[:2, :2], x.reshape(2, 2, 2, 2).sum(dim=(1, 3)) / 2)
    const = dwt2(torch.ones(32, 32), 3, "db4")
    assert int((const.abs() > 1e-5).sum()) == 16  # only the 4x4 approximation band is non-zero


@pytest.mark.parametrize("shape", [(37, 50), (233, 197), (64, 64)])
def test_wavelet_operator_pads_any_size_and_passes_dot_test(shape):
    op = WaveletTransform(shape, "db2")
    assert op.levels == default_levels(shape)
    x = _crandn(2, *shape)
    assert torch.allclose(op.adjoint(op.forward(x)), x, atol=1e-5)  # W^H W = I
    assert dot_product_test(op, x, _crandn(2, *op.coeff_shape, seed=3)) < 1e-5


def test_wavelet_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown wavelet"):
        dwt2(torch.zeros(8, 8), 1, "sym4")
    with pytest.raises(ValueError, match="not divisible"):
        dwt2(torch.zeros(12, 8), 3, "haar")
    with pytest.raises(ValueError, match="does not match"):
        WaveletTransform((16, 16)).forward(torch.zeros(16, 8))


# --------------------------------------------------------------------------- solvers

@pytest.mark.parametrize("method", ["ista", "fista", "pogm"])
def test_prox_gradient_soft_threshold_identity_case(method):
    # min 1/2 ||x - y||^2 + lam ||x||_1 has the closed form soft(y, lam)
    y = _crandn(50)
    lam = 0.7
    x = proximal_gradient(Identity(), y, lambda v, t: soft_threshold(v, lam * t), torch.zeros_like(y),
                          step=0.5, max_iter=60, method=method)
    expected = y * torch.clamp(1 - lam / y.abs(), min=0)
    assert torch.allclose(x, expected, atol=1e-5)
    assert int((expected == 0).sum()) > 5  # the threshold is active somewhere


@pytest.mark.parametrize("method", ["fista", "pogm"])
def test_prox_gradient_solves_lasso_kkt(method):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 20, generator=g, dtype=torch.float64)
    b = torch.randn(30, generator=g, dtype=torch.float64)
    lam = 2.0
    lipschitz = float(torch.linalg.matrix_norm(a, ord=2)) ** 2
    calls = []
    dense = FunctionOperator(lambda x: a @ x, lambda r: a.T @ r)
    x = proximal_gradient(dense, b, lambda v, t: soft_threshold(v, lam * t),
                          torch.zeros(20, dtype=torch.float64), step=1 / lipschitz, max_iter=3000, method=method,
                          callback=lambda i, n: calls.append((i, n)))
    assert calls[0] == (1, 3000) and calls[-1] == (3000, 3000)
    grad = a.T @ (b - a @ x)  # KKT: grad = lam sign(x) on the support, |grad| <= lam off it
    support = x.abs() > 1e-8
    assert 0 < int(support.sum()) < 20
    assert torch.allclose(grad[support], lam * torch.sign(x[support]), atol=1e-6)
    assert float(grad[~support].abs().max()) <= lam + 1e-6


def test_solver_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown method"):
        proximal_gradient(lambda x: x, None, lambda v, t: v, torch.zeros(3), 1.0, 5, method="adam")
    with pytest.raises(ValueError, match="step"):
        proximal_gradient(lambda x: x, None, lambda v, t: v, torch.zeros(3), 0.0, 5)
    with pytest.raises(ValueError, match="needs the data"):
        proximal_gradient(Identity(), None, lambda v, t: v, torch.zeros(3), 1.0, 5)
    with pytest.raises(ValueError, match="y must be None"):
        proximal_gradient(lambda x: x, torch.zeros(3), lambda v, t: v, torch.zeros(3), 1.0, 5)


# --------------------------------------------------------------------------- SENSE operators

@pytest.mark.parametrize("shape,sets", [((8, 32, 48), False), ((2, 3, 16, 16), False), ((4, 17, 12), False),
                                        ((2, 4, 16, 20), True)])
def test_fast_normal_matches_shifted_operator(shape, sets):
    maps = _crandn(*shape)
    mask = (torch.rand(1, shape[-1], generator=torch.Generator().manual_seed(1)) > 0.5).float()
    op = SoftSenseOperator(maps, mask) if sets else SenseOperator(maps, mask)
    x = _crandn(*(shape[:-3] + shape[-2:]), seed=2)
    ref = op.adjoint(op.forward(x))  # the composed, shifted M F S
    assert torch.allclose(fast_normal(maps, mask, sets)(x), ref, atol=1e-4 * float(ref.abs().max()))
    assert torch.allclose(op.normal(x), ref, atol=1e-4 * float(ref.abs().max()))
    assert torch.allclose(op.N(x), ref, atol=1e-4 * float(ref.abs().max()))


def test_soft_sense_operator_dot_test_and_single_set():
    maps = _crandn(2, 4, 16, 16)
    mask = torch.ones(1, 16)
    op = SoftSenseOperator(maps, mask)
    assert dot_product_test(op, _crandn(2, 16, 16, seed=1), _crandn(4, 16, 16, seed=2)) < 1e-5
    one = SoftSenseOperator(maps[:1], mask)
    x = _crandn(16, 16, seed=3)
    assert torch.allclose(one.forward(x[None]), SenseOperator(maps[0], mask).forward(x), atol=1e-5)


# --------------------------------------------------------------------------- L1-wavelet

def test_l1_wavelet_fully_sampled_single_coil_is_wavelet_shrinkage():
    # A = F (unitary): the minimiser is W^H soft(W F^H y), computable in closed form
    x_true = _crandn(32, 32)
    y = fft2c(x_true)[None]
    maps = torch.ones(1, 32, 32, dtype=torch.complex64)
    mask = torch.ones(1, 32)
    lam = 0.05
    out = l1_wavelet(y, mask, maps, lam=lam, max_iter=20, wavelet="db2", levels=2, random_shift=False, method="fista",
                     continuation=1.0)
    scale = torch.quantile(x_true.abs().flatten(), 0.99)
    c = dwt2(x_true, 2, "db2")
    expected = idwt2(soft_threshold(c, float(lam * scale)), 2, "db2")
    assert torch.allclose(out, expected, atol=1e-4)


def test_l1_wavelet_is_batched_scale_equivariant_and_reports_progress():
    maps = _crandn(4, 32, 40)
    maps = maps / torch.sqrt((maps.abs() ** 2).sum(0))
    x = _crandn(32, 40, seed=1)
    mask = torch.from_numpy(random_column_mask(40, 2, 0.2, seed=0).mask)
    y = fft2c(maps * x) * mask
    calls = []
    one = l1_wavelet(y, mask, maps, max_iter=10, callback=lambda i, n: calls.append((i, n)))
    assert calls == [(i, 10) for i in range(1, 11)]
    batch = l1_wavelet(torch.stack((y, 10 * y)), mask, maps, max_iter=10)
    assert batch.shape == (2, 32, 40)
    assert torch.allclose(batch[0], one, atol=1e-5)
    assert torch.allclose(batch[1], 10 * one, rtol=1e-4, atol=1e-4)


def test_l1_wavelet_pads_sizes_the_wavelet_does_not_divide():
    # 29 x 38 (odd height: also the shifted-FFT fallback of fast_normal), 3 levels -> solved on 32 x 40
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 29), torch.linspace(-1, 1, 38), indexing="ij")
    x = ((xx**2 + yy**2) < 0.6).to(torch.complex64) + 0.5 * ((xx - 0.2) ** 2 + yy**2 < 0.05)
    maps = _crandn(4, 29, 38)
    maps = maps / torch.sqrt((maps.abs() ** 2).sum(0))
    mask = torch.from_numpy(random_column_mask(38, 3, 0.2, seed=1).mask)
    y = fft2c(maps * x) * mask
    out = l1_wavelet(y, mask, maps, levels=3, max_iter=80)
    assert out.shape == (29, 38)
    cg_err = torch.linalg.vector_norm(cg_sense(y, mask, maps) - x)  # piecewise-constant object: L1 wins
    assert float(torch.linalg.vector_norm(out - x)) < 0.5 * float(cg_err)


def test_l1_wavelet_bad_inputs():
    maps = torch.ones(4, 16, 16, dtype=torch.complex64)
    y = torch.ones(4, 16, 16, dtype=torch.complex64)
    mask = torch.ones(1, 16)
    with pytest.raises(ValueError, match="maps shape"):
        l1_wavelet(y, mask, maps[:3])
    with pytest.raises(ValueError, match="mask"):
        l1_wavelet(y, torch.ones(1, 8), maps)
    with pytest.raises(ValueError, match="mask is empty"):
        l1_wavelet(y, torch.zeros(1, 16), maps)
    with pytest.raises(ValueError, match="complex"):
        l1_wavelet(y.real, mask, maps)
    bad = y.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        l1_wavelet(bad, mask, maps)
    with pytest.raises(ValueError, match="x0 shape"):
        l1_wavelet(y, mask, maps, x0=torch.zeros(8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="unknown wavelet"):
        l1_wavelet(y, mask, maps, wavelet="coif1")
    with pytest.raises(ValueError, match="maps are all zero"):
        l1_wavelet(y, mask, torch.zeros_like(maps))


def test_lipschitz_bound_of_orthogonal_sets_is_one():
    v = torch.linalg.qr(_crandn(64, 4, 4)).Q  # per pixel orthonormal columns
    maps = v[..., :2].permute(2, 1, 0).reshape(2, 4, 8, 8)
    assert lipschitz_bound(maps, sets=True) == pytest.approx(1.0, abs=1e-5)
    assert lipschitz_bound(maps[0]) == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- ranking on a small brain

def _small_brain(size=128, coils=8, noise=0.01, seed=0):
    import sigpy.mri
    from skimage.transform import resize

    from pipelines.simulate.template import load_icbm152

    volume = load_icbm152()[0]["t1"]
    axial = np.rot90(volume[:, :, 100])
    side = max(axial.shape)
    square = np.zeros((side, side), np.float32)
    oy, ox = (side - axial.shape[0]) // 2, (side - axial.shape[1]) // 2
    square[oy: oy + axial.shape[0], ox: ox + axial.shape[1]] = axial
    image = resize(square, (size - 8, size - 8), anti_aliasing=True)
    image = np.pad(image, 4) / image.max()
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    obj = image * np.exp(1j * np.pi * 0.8 * (0.6 * xx + 0.4 * yy ** 2))
    maps = sigpy.mri.birdcage_maps((coils, size, size), r=1.2).astype(np.complex64)
    coil_images = maps * obj
    reference = np.sqrt((np.abs(coil_images) ** 2).sum(0))
    kspace = fft2c(torch.from_numpy(coil_images.astype(np.complex64)))
    rng = np.random.default_rng(seed)
    sigma = noise * float(np.abs(coil_images)[:, image > 0.05].mean())
    kspace = kspace + torch.from_numpy((sigma * (rng.standard_normal(kspace.shape)
                                                 + 1j * rng.standard_normal(kspace.shape)) / np.sqrt(2))
                                       .astype(np.complex64))
    return kspace, reference


def _fastmri_metrics(image, reference):
    mag = np.abs(image.numpy()).astype(np.float64)
    scale = (mag * reference).sum() / (mag * mag).sum()
    mag = scale * mag
    psnr = 20 * np.log10(reference.max()) - 10 * np.log10(((mag - reference) ** 2).mean())
    ssim = structural_similarity(reference, mag, win_size=7, data_range=float(reference.max()))
    return psnr, ssim


@pytest.mark.parametrize("acceleration", [4, 8])
def test_ranking_l1_wavelet_beats_cg_sense_beats_zero_filled(acceleration):
    # 128 x 128, 8 coils, fastMRI-style masks (8% centre); at 96 x 96 (2 wavelet levels, 8 centre lines)
    # L1-wavelet and CG-SENSE tie within 0.1 dB
    kspace, reference = _small_brain(size=128)
    mask_info = random_column_mask(128, acceleration, 0.08, seed=3)
    mask = torch.from_numpy(mask_info.mask)
    y = kspace * mask
    maps = espirit_torch(y)
    scores = {
        "zero-filled": _fastmri_metrics(zero_filled(y, mask), reference),
        "cg-sense": _fastmri_metrics(cg_sense(y, mask, maps), reference),
        "l1-wavelet": _fastmri_metrics(l1_wavelet(y, mask, maps), reference),
    }
    for metric in (0, 1):
        assert scores["l1-wavelet"][metric] > scores["cg-sense"][metric] > scores["zero-filled"][metric], scores


# --------------------------------------------------------------------------- torch ESPIRiT

def test_calibration_region_grows_the_narrow_side():
    sampled = np.zeros((128, 128), bool)
    sampled[:, 60:68] = True  # 8 fully sampled columns
    rows, cols = calibration_region(sampled, max_size=24)
    assert cols.stop - cols.start == 8
    assert rows.stop - rows.start == 24 * 24 // 8  # area budget spent on rows
    with pytest.raises(ValueError, match="centre is not sampled"):
        calibration_region(np.zeros((8, 8), bool))


def test_espirit_torch_agrees_with_sigpy_and_is_normalised():
    kspace, reference = _small_brain(size=64)
    mask = torch.from_numpy(random_column_mask(64, 3, 0.3, seed=0).mask)
    y = (kspace * mask).numpy()
    ours = espirit_torch(y).numpy()
    theirs = espirit_maps(y, 19)
    inside = reference > 0.2 * reference.max()
    norm = (np.abs(ours) ** 2).sum(0)
    assert np.allclose(norm[inside], 1, atol=1e-4)
    agreement = np.abs((ours.conj() * theirs).sum(0))[inside]
    assert float(np.median(agreement)) > 0.99
    two = espirit_torch(y, num_maps=2)
    assert two.shape == (2, 8, 64, 64)
    both = (two[0].abs().sum(0) > 0) & (two[1].abs().sum(0) > 0)
    if bool(both.any()):
        assert float((two[0].conj() * two[1]).sum(0)[both].abs().max()) < 1e-3  # orthogonal sets


def test_espirit_torch_bad_inputs():
    with pytest.raises(ValueError, match="coils, H, W"):
        espirit_torch(np.zeros((4, 4), np.complex64))
    y = np.ones((2, 16, 16), np.complex64)
    y[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        espirit_torch(y)
    with pytest.raises(ValueError, match="num_maps"):
        espirit_torch(np.ones((2, 16, 16), np.complex64), num_maps=3)
    with pytest.raises(ValueError, match="kernel width"):
        espirit_torch(np.ones((2, 4, 4), np.complex64), kernel_width=6)


def test_line_mask_normal_equals_the_2d_form_and_other_masks_keep_it():
    maps = _crandn(2, 6, 32, 48, seed=4)
    x = _crandn(2, 32, 48, seed=5)
    line = (torch.rand(48, generator=torch.Generator().manual_seed(6)) < 0.3).float()
    for mask in (line.reshape(1, 48), line.expand(32, 48).clone()):
        op = sense_operator(maps, mask, sets=False)
        assert type(op).__name__ == "_LineMaskSense"
        assert torch.allclose(op.normal(x), SenseOperator(maps, mask).normal(x), atol=1e-5)
        assert torch.allclose(op.adjoint(op.forward(x)), op.normal(x), atol=1e-5)
    scattered = (torch.rand(32, 48, generator=torch.Generator().manual_seed(7)) < 0.3).float()
    assert type(sense_operator(maps, scattered, sets=False)) is SenseOperator
