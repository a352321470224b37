"""RecurrentVarNet, RIM and their shared pieces (complex ops, ConvGRU, map U-Net, scaling)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from models.physics.mri import coils
from models.physics.mri.fft import fft2c, ifft2c
from models.unrolled import (
    PAPER_CONFIG,
    REFERENCE_CONFIG,
    RIM,
    RecurrentVarNet,
    build_model,
    count_parameters,
    kspace_scale,
    scale_kspace,
)
from models.unrolled.complex_ops import CenteredFFT, complex_conj, complex_mul, complex_mul_conj, expand, reduce
from models.unrolled.conv_gru import ConvRecurrentUnit
from models.unrolled.sens_unet import SensitivityRefiner

pytestmark = pytest.mark.usefixtures("single_thread")


TINY_RVN = {"num_steps": 2, "hidden_channels": 8, "num_layers": 2, "multiscale": 2,
            "initializer_channels": [8, 8, 16, 16]}
TINY_RIM = {"num_steps": 3, "hidden_channels": 8, "num_layers": 2}


def make_data(n: int, c: int, h: int, w: int, mask_2d: bool = False, seed: int = 0):
    """Random coil k-space, a random mask and maps normalised to sum_c |S_c|^2 = 1."""
    g = torch.Generator().manual_seed(seed)
    kspace = torch.randn(n, c, h, w, 2, generator=g)
    mask = (torch.rand(n, 1, h if mask_2d else 1, w, 1, generator=g) < 0.4).float()
    mask[..., w // 2, :] = 1.0
    maps = torch.randn(n, c, h, w, 2, generator=g)
    maps = maps / maps.pow(2).sum(dim=(1, 4), keepdim=True).sqrt()
    return kspace * mask, mask, maps


def as_complex(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(x.contiguous())


# ---------------------------------------------------------------- complex helpers


def test_complex_ops_match_torch_complex():
    a = torch.randn(3, 4, 5, 2)
    b = torch.randn(4, 5, 2)
    ca, cb = as_complex(a), as_complex(b)
    torch.testing.assert_close(as_complex(complex_mul(a, b)), ca * cb)
    torch.testing.assert_close(as_complex(complex_conj(a)), ca.conj())
    torch.testing.assert_close(as_complex(complex_mul_conj(a, b)), ca.conj() * cb)


def test_expand_reduce_match_physics_and_are_adjoint():
    _, _, maps = make_data(2, 5, 9, 7)
    x = torch.randn(2, 9, 7, 2)
    z = torch.randn(2, 5, 9, 7, 2)
    torch.testing.assert_close(as_complex(expand(x, maps)), coils.expand(as_complex(x), as_complex(maps)))
    torch.testing.assert_close(as_complex(reduce(z, maps)), coils.reduce(as_complex(z), as_complex(maps)))
    lhs = torch.vdot(as_complex(expand(x, maps)).flatten(), as_complex(z).flatten())
    rhs = torch.vdot(as_complex(x).flatten(), as_complex(reduce(z, maps)).flatten())
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["dft-op", "matmul"])
def test_centered_fft_variants_match_complex_fft(variant):
    x = torch.randn(2, 3, 11, 8, 2)
    f = CenteredFFT(variant, x)
    torch.testing.assert_close(as_complex(f.fft(x)), fft2c(as_complex(x)), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(as_complex(f.ifft(x)), ifft2c(as_complex(x)), rtol=1e-4, atol=1e-4)


def test_unknown_fft_variant_is_refused():
    with pytest.raises(ValueError, match="fft_variant"):
        RecurrentVarNet(**TINY_RVN, fft_variant="cufft")
    with pytest.raises(ValueError, match="fft_variant"):
        RIM(**TINY_RIM).set_fft_variant("fftw")


# ---------------------------------------------------------------- building blocks


@pytest.mark.parametrize("cell", ["gru", "indrnn"])
def test_conv_recurrent_unit_shapes_and_state(cell):
    unit = ConvRecurrentUnit(4, 6, 2, num_layers=3, cell=cell)
    x = torch.randn(2, 4, 13, 10)
    out, state = unit(x)
    assert out.shape == (2, 2, 13, 10)
    assert state.shape == (2, 6, 13, 10, 3)
    out2, state2 = unit(x, state)
    assert not torch.allclose(state2, state)  # the state is used and updated
    with pytest.raises(ValueError, match="cell"):
        ConvRecurrentUnit(4, 6, 2, cell="lstm")


def test_sensitivity_refiner_any_size_and_normalised():
    refiner = SensitivityRefiner(channels=4, pools=3)
    _, _, maps = make_data(2, 3, 17, 29)
    out = refiner(maps)
    assert out.shape == maps.shape
    torch.testing.assert_close(out.pow(2).sum(dim=(1, 4)), torch.ones(2, 17, 29), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- parameter counts


def test_parameter_counts_paper_and_reference():
    rvn = build_model("recurrentvarnet", PAPER_CONFIG)
    n_rvn = count_parameters(rvn)
    assert abs(n_rvn - 6.9e6) / 6.9e6 < 0.05, n_rvn
    assert n_rvn == 6_918_424  # 8 x 846,339 (ConvGRU + step) + 147,712 (RecurrentInit)
    n_sens = count_parameters(SensitivityRefiner(8, 4))
    assert abs(n_sens - 0.48e6) / 0.48e6 < 0.05, n_sens
    tiny = count_parameters(RecurrentVarNet(**TINY_RVN))
    tiny_sens = count_parameters(RecurrentVarNet(**TINY_RVN, sens_refinement=True))
    assert tiny_sens == tiny + n_sens
    n_rim = count_parameters(build_model("rim", REFERENCE_CONFIG))
    assert abs(n_rim - 0.36e6) / 0.36e6 < 0.05, n_rim
    n_ind = count_parameters(build_model("rim", dict(REFERENCE_CONFIG, cell="indrnn")))
    assert n_ind < n_rim  # IndRNN replaces three 2h->h gates by one h->h conv and a vector


def test_blocks_do_not_share_weights():
    model = RecurrentVarNet(**TINY_RVN)
    p0 = dict(model.blocks[0].named_parameters())
    p1 = dict(model.blocks[1].named_parameters())
    assert all(p0[name].data_ptr() != p1[name].data_ptr() for name in p0)
    assert len(list(model.parameters())) == len(set(map(id, model.parameters())))


def test_paper_configuration_runs_one_forward():
    torch.manual_seed(0)
    model = build_model("recurrentvarnet", PAPER_CONFIG).eval()
    masked, mask, maps = make_data(1, 12, 218, 170)
    start = time.perf_counter()
    with torch.no_grad():
        out = model(masked, mask, maps)
    elapsed = time.perf_counter() - start
    assert out.shape == (1, 218, 170, 2)
    assert torch.isfinite(out).all()
    print(f"paper-config RecurrentVarNet forward, 12x218x170: {elapsed:.1f} s")


# ---------------------------------------------------------------- shapes, masks, coils


@pytest.mark.parametrize("kind", ["recurrentvarnet", "rim"])
@pytest.mark.parametrize(("n", "c", "h", "w", "mask_2d"), [(1, 1, 16, 12, False), (2, 5, 13, 10, True),
                                                           (1, 12, 20, 9, False)])
def test_output_shape_any_size_and_coils(kind, n, c, h, w, mask_2d):
    config = TINY_RVN if kind == "recurrentvarnet" else TINY_RIM
    model = build_model(kind, config).eval()
    masked, mask, maps = make_data(n, c, h, w, mask_2d)
    with torch.no_grad():
        out = model(masked, mask, maps)
    assert out.shape == (n, h, w, 2)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["recurrentvarnet", "rim"])
def test_bool_mask_same_as_float_mask(kind):
    model = build_model(kind, TINY_RVN if kind == "recurrentvarnet" else TINY_RIM).eval()
    masked, mask, maps = make_data(1, 3, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(model(masked, mask.bool(), maps), model(masked, mask, maps))


def test_bad_shapes_are_refused():
    model = RecurrentVarNet(**TINY_RVN)
    masked, mask, maps = make_data(1, 3, 12, 10)
    with pytest.raises(ValueError, match="masked_kspace"):
        model(masked[..., 0], mask, maps)
    with pytest.raises(ValueError, match="sens_maps"):
        model(masked, mask, maps[:, :2])
    with pytest.raises(ValueError, match="mask"):
        model(masked, mask[:, :, :, :5], maps)


def test_rim_returns_all_iterates_in_training_mode():
    model = RIM(**TINY_RIM)
    masked, mask, maps = make_data(2, 3, 12, 10)
    model.train()
    steps = model(masked, mask, maps)
    assert isinstance(steps, list) and len(steps) == TINY_RIM["num_steps"]
    assert all(s.shape == (2, 12, 10, 2) for s in steps)
    model.eval()
    with torch.no_grad():
        final = model(masked, mask, maps)
    torch.testing.assert_close(final, steps[-1].detach())


def test_recurrentvarnet_iterates_end_in_the_forward_output():
    model = RecurrentVarNet(**TINY_RVN).eval()
    masked, mask, maps = make_data(2, 3, 12, 10)
    with torch.no_grad():
        steps = model.iterates(masked, mask, maps)
        final = model(masked, mask, maps)
    assert len(steps) == TINY_RVN["num_steps"] and all(s.shape == (2, 12, 10, 2) for s in steps)
    torch.testing.assert_close(steps[-1], final)
    assert not torch.allclose(steps[0], steps[-1])  # each block changes the image


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("kind", ["recurrentvarnet", "rim"])
def test_gradients_reach_every_parameter(kind):
    config = dict(TINY_RVN if kind == "recurrentvarnet" else dict(TINY_RIM, cell="indrnn"),
                  sens_refinement=True, sens_unet_channels=4, sens_unet_pools=2)
    model = build_model(kind, config).train()
    masked, mask, maps = make_data(2, 3, 12, 10)
    out = model(masked, mask, maps)
    loss = torch.stack([o.abs().mean() for o in out]).mean() if isinstance(out, list) else out.abs().mean()
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [name for name, p in model.named_parameters() if p.grad.abs().sum() == 0]
    # k_0 = y, so the first block's data term M(k_0 - y) vanishes and a_0 gets no gradient (as in the paper)
    assert zero == (["blocks.0.step_size"] if kind == "recurrentvarnet" else [])


# ---------------------------------------------------------------- data consistency and operators


def _zero_regulariser(block) -> None:
    conv = block.regularizer.out_conv[-1]
    torch.nn.init.zeros_(conv.weight)
    torch.nn.init.zeros_(conv.bias)


def test_recurrentvarnet_last_block_restores_measured_samples():
    """With the last block's regulariser output zeroed and a_T = 1: k_T = y where sampled."""
    torch.manual_seed(1)
    model = RecurrentVarNet(**dict(TINY_RVN, num_steps=3)).eval()
    _zero_regulariser(model.blocks[-1])
    with torch.no_grad():
        model.blocks[-1].step_size.fill_(1.0)
        for block in model.blocks[:-1]:  # earlier blocks move the sampled entries away from y
            block.regularizer.out_conv[-1].bias.fill_(0.5)
    masked, mask, maps = make_data(2, 4, 14, 12, mask_2d=True)
    with torch.no_grad():
        kspace, _ = model.predict_kspace(masked, mask, maps)
    sampled = mask.expand_as(kspace).bool()
    torch.testing.assert_close(kspace[sampled], masked[sampled], rtol=0, atol=1e-5)
    assert (kspace[~sampled].abs() > 1e-3).float().mean() > 0.5  # unsampled entries were filled in


def test_recurrentvarnet_with_zero_regularisers_is_sense_zero_filled():
    """All regularisers zero: k_t stays y and the output is R(y) = sum_c conj(S_c) F^-1 y_c."""
    model = RecurrentVarNet(**TINY_RVN).eval()
    for block in model.blocks:
        _zero_regulariser(block)
    masked, mask, maps = make_data(2, 4, 14, 12)
    with torch.no_grad():
        out = model(masked, mask, maps)
    expected = coils.reduce(ifft2c(as_complex(masked)), as_complex(maps))
    torch.testing.assert_close(as_complex(out), expected, rtol=1e-4, atol=1e-5)


def test_recurrentvarnet_step_size_scales_data_term():
    """Zero regulariser, a_1 = 0.5, started from k_0 != y: sampled entries move half way to y."""
    model = RecurrentVarNet(**dict(TINY_RVN, num_steps=1)).eval()
    _zero_regulariser(model.blocks[0])
    with torch.no_grad():
        model.blocks[0].step_size.fill_(0.5)
    masked, mask, maps = make_data(1, 3, 10, 8)
    k0 = torch.randn_like(masked)
    fourier = CenteredFFT("dft-op", masked)
    with torch.no_grad():
        k1, _ = model.blocks[0](k0, masked, mask, maps, None, fourier)
    expected = k0 - 0.5 * mask * (k0 - masked)
    torch.testing.assert_close(k1, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["dft-op", "matmul"])
def test_rim_data_gradient_is_gradient_of_data_term(variant):
    masked, mask, maps = make_data(2, 3, 11, 9, mask_2d=True)
    x = torch.randn(2, 11, 9, 2, requires_grad=True)
    fourier = CenteredFFT(variant, masked)
    grad = RIM.data_gradient(x, masked, mask, maps, fourier)
    # independent route: complex tensors and the physics package
    cx, cy, cs = as_complex(x), as_complex(masked), as_complex(maps)
    m = mask[..., 0]
    residual = m * fft2c(coils.expand(cx, cs)) - cy
    expected = coils.reduce(ifft2c(m * residual), cs)
    torch.testing.assert_close(as_complex(grad), expected, rtol=1e-4, atol=1e-4)
    # and it is the gradient of 0.5 ||M F E x - y||^2 in the real (re, im) parametrisation
    loss = 0.5 * residual.abs().pow(2).sum()
    (auto,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(grad, auto, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["recurrentvarnet", "rim"])
def test_fft_variants_give_same_output(kind):
    torch.manual_seed(3)
    config = dict(TINY_RVN if kind == "recurrentvarnet" else TINY_RIM, sens_refinement=True,
                  sens_unet_channels=4, sens_unet_pools=2)
    model = build_model(kind, config).eval()
    masked, mask, maps = make_data(2, 4, 15, 12)
    with torch.no_grad():
        model.set_fft_variant("dft-op")
        a = model(masked, mask, maps)
        model.set_fft_variant("matmul")
        b = model(masked, mask, maps)
    assert (a - b).abs().max() < 1e-4 * max(1.0, a.abs().max().item())


# ---------------------------------------------------------------- factory and scaling


def test_build_model_from_json_config():
    config = json.loads(json.dumps(dict(TINY_RVN, fft_variant="matmul")))
    model = build_model("recurrentvarnet", config)
    assert isinstance(model, RecurrentVarNet) and model.fft_variant == "matmul"
    assert len(model.blocks) == TINY_RVN["num_steps"]
    rim = build_model("rim", json.loads(json.dumps(dict(TINY_RIM, cell="indrnn"))))
    assert isinstance(rim, RIM) and rim.unit.cell_type == "indrnn"
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("varnet", {})
    with pytest.raises(ValueError, match="invalid config for rim"):
        build_model("rim", {"num_blocks": 3})


def test_kspace_scale_is_99th_percentile_of_magnitude():
    mags = torch.arange(1, 1001, dtype=torch.float32)            # |y| = 1 .. 1000
    phase = torch.rand(1000) * 6.283
    y = torch.stack((mags * torch.cos(phase), mags * torch.sin(phase)), dim=-1)
    y = y[torch.randperm(1000)].reshape(1, 10, 10, 10, 2)
    scale = kspace_scale(y)
    torch.testing.assert_close(scale, torch.tensor([990.0]), rtol=1e-4, atol=0)
    torch.testing.assert_close(kspace_scale(as_complex(y)), scale)
    scaled, s = scale_kspace(torch.cat((y, 3 * y)))
    torch.testing.assert_close(s, torch.tensor([990.0, 2970.0]), rtol=1e-4, atol=0)
    torch.testing.assert_close(kspace_scale(scaled), torch.ones(2), rtol=1e-4, atol=0)
    assert kspace_scale(torch.zeros(1, 2, 4, 4, 2)).item() == 1.0
    with pytest.raises(ValueError, match="trailing complex axis"):
        kspace_scale(torch.zeros(1, 2, 4, 3))
