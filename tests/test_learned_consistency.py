"""The learned methods' data-consistency step: the solver's algebra, and fully sampled inputs returned as measured."""

import numpy as np
import pytest
import torch

from models.classical.mri import data_consistency, radial_bands
from models.physics.mri.fft import fft2c, ifft2c
from models.physics.mri.sensitivity import acs_maps
from pipelines.learned import DataConsistency, collate, prepare_input
from pipelines.pipeline import reconstruct
from pipelines.simulate import mri

pytestmark = pytest.mark.usefixtures("single_thread")


def _maps_and_image(coils=4, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    maps = torch.randn(coils, size, size, dtype=torch.complex64, generator=gen)
    maps = maps / (maps.abs() ** 2).sum(0).sqrt()
    image = torch.randn(size, size, dtype=torch.complex64, generator=gen)
    return maps, image


def test_full_sampling_returns_the_data_image_pulled_towards_x0_by_lam():
    maps, truth = _maps_and_image()
    kspace = fft2c(maps * truth)
    x0 = torch.zeros_like(truth)
    mask = torch.ones(1, 32)
    data_image = (maps.conj() * ifft2c(kspace)).sum(0)
    assert torch.allclose(data_consistency(x0, kspace, mask, maps, 0.0, 3), data_image, atol=1e-4)
    # (A^H y + lam x0) / (1 + lam): A^H A = I with full sampling and normalised maps
    x0 = truth + 0.5
    expected = (data_image + 0.25 * x0) / 1.25
    assert torch.allclose(data_consistency(x0, kspace, mask, maps, 0.25, 3), expected, atol=1e-4)


def test_projection_fits_the_data_and_keeps_x0_where_the_data_is_blind():
    maps, truth = _maps_and_image(coils=2)
    mask = torch.zeros(1, 32)
    mask[:, ::3] = 1
    kspace = mask * fft2c(maps * truth)
    x0 = torch.randn(32, 32, dtype=torch.complex64, generator=torch.Generator().manual_seed(5))
    x = data_consistency(x0, kspace, mask, maps, 0.0, 200)
    fitted = mask * fft2c(maps * x)
    assert torch.linalg.vector_norm(fitted - kspace) < 1e-3 * torch.linalg.vector_norm(kspace)
    # the change x - x0 lies in the range of A^H: orthogonal to every null-space direction of A
    null = torch.randn(32, 32, dtype=torch.complex64, generator=torch.Generator().manual_seed(6))
    null = null - data_consistency(null, torch.zeros_like(kspace), mask, maps, 0.0, 200)
    assert torch.linalg.vector_norm(mask * fft2c(maps * null)) < 1e-3 * torch.linalg.vector_norm(null)
    assert abs(torch.vdot((x - x0).flatten(), null.flatten())) < 1e-3 * torch.linalg.vector_norm(null) * \
        torch.linalg.vector_norm(x - x0)


def test_only_bands_that_contradict_the_data_are_corrected():
    cfg = mri.MRISimulationConfig(size=64, coils=6, slices=1, snr_db=30)
    acq = mri.simulate_slab("t2", "axial", 90, 4.0, cfg, seed=3)
    inputs = collate([prepare_input(acq.kspace[0], acq.mask, acq.num_low_frequencies)])
    sigma = acq.attrs["noise_sigma"]
    maps = torch.view_as_complex(inputs["sens_maps"][0].contiguous())
    # the noise-free image the data was made from, as the maps see it: a network that got it right
    coil_images = ifft2c(torch.from_numpy(acq.kspace[0]))
    truth = (maps.conj() * ifft2c(fft2c(coil_images) * torch.from_numpy(acq.mask))).sum(0)  # zero-filled
    exact = DataConsistency(sigma, "exact", iterations=50)
    good = exact.apply(torch.view_as_real(truth)[None], inputs)  # the least-squares fit: as good as data gets
    step = DataConsistency(sigma, threshold=1.0)
    kept = step.apply(good, inputs)
    assert step.slices[0]["corrected"] == 0 and torch.equal(kept, good)
    # an image off by well under the noise level agrees with the data: kept as it is
    gen = torch.Generator().manual_seed(1)
    support = (maps.abs() ** 2).sum(0) > 0
    wiggle = 0.3 * sigma * support * torch.randn(64, 64, dtype=torch.complex64, generator=gen)
    near = good + torch.view_as_real(wiggle)[None]
    assert torch.equal(step.apply(near, inputs), near) and step.slices[1]["corrected"] == 0
    # one that lost the fine detail (an ideal low-pass) contradicts the data: corrected towards it
    lowpass = (radial_bands((64, 64), 12) < 4).to(torch.complex64)
    blurred = torch.view_as_real(ifft2c(fft2c(torch.view_as_complex(good[0].contiguous())) * lowpass))[None]
    step.apply(blurred, inputs)
    smeared = step.slices[2]
    assert smeared["corrected"] > 0.5 and smeared["residual"] < 0.9 * smeared["residual_network"]
    # nothing at all: every band contradicts
    step.apply(torch.zeros_like(good), inputs)
    empty = step.slices[3]
    assert empty["corrected"] == 1 and empty["residual"] < 0.2 * empty["residual_network"]
    assert exact.slices[0]["corrected"] == 1
    measured = DataConsistency(sigma, "off")
    assert torch.equal(measured.apply(blurred, inputs), blurred)
    assert measured.slices[0]["residual_network"] == pytest.approx(smeared["residual_network"], rel=1e-5)


# (size, coils, snr_db): several matrix sizes and coil counts, fully sampled
FULL_CASES = [(48, 4, 30.0), (64, 8, 25.0), (40, 12, 35.0)]


@pytest.fixture(scope="module", params=FULL_CASES, ids=lambda c: f"{c[0]}px-{c[1]}coils-{c[2]:g}dB")
def fully_sampled(request):
    size, coils, snr = request.param
    cfg = mri.MRISimulationConfig(size=size, coils=coils, slices=2, snr_db=snr)
    acq = mri.simulate_slab("t1", "axial", 100, 1.0, cfg, seed=size + coils)
    width = acq.kspace.shape[-1]
    # the data's own coil-combined image: the measured coil images combined with the maps the methods use
    data_image = np.stack([
        (acs_maps(k, width).conj() * ifft2c(torch.from_numpy(k)).numpy()).sum(0) for k in acq.kspace])
    return acq, np.abs(data_image)


@pytest.mark.parametrize("method", ["recurrentvarnet", "rim"])
def test_fully_sampled_input_comes_back_as_measured(method, fully_sampled):
    acq, data_image = fully_sampled
    sigma = acq.attrs["noise_sigma"]
    obj = acq.reference > 0.1 * acq.reference.max()

    def rms(image, target):
        return float(np.sqrt(np.mean((image - target)[obj] ** 2)))

    out = np.abs(reconstruct(acq, method).volume.data)
    off = np.abs(reconstruct(acq, method, {"consistency": "off"}).volume.data)
    # the data's image is off the truth by its noise (about 0.7 sigma in magnitude); the output stays within the
    # noise level of it and is hardly further from the truth
    assert rms(out, data_image) < sigma
    assert rms(out, acq.reference) < rms(data_image, acq.reference) + 0.3 * sigma
    # without the step the networks move measured data further than the noise: the check can fail
    assert rms(off, data_image) > 1.5 * sigma
