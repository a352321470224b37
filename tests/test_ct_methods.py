import numpy as np
import pytest

from pipelines.data import CTAcquisition, ImageVolume, InputError
from pipelines.io.sinogram import read_sinogram
from pipelines.reconstructors import ParamError, available, get
from pipelines.simulate.ct import simulate_ct_dataset

SMALL = {"fbp": {}, "sirt": {"iterations": 10}, "cgls": {"iterations": 5}, "admm-tv": {"iterations": 5},
         "admm-tv-2d": {"iterations": 5}}


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory) -> CTAcquisition:
    out = tmp_path_factory.mktemp("ct")
    return read_sinogram(simulate_ct_dataset(out, views=6, geometry="fan", source="shepp-logan", size=24, slices=3)[0])


def test_ct_methods_registered():
    names = {m.name for m in available("ct")}
    assert {"fbp", "sirt", "admm-tv", "cgls", "admm-tv-2d"} <= names


@pytest.mark.parametrize("name", list(SMALL))
def test_each_method_returns_a_volume_with_the_acquisition_affine(acquisition, name):
    calls = []
    method = get("ct", name)
    vol = method.run(acquisition, method.check(SMALL[name]), lambda i, n: calls.append((i, n)))
    assert isinstance(vol, ImageVolume)
    assert vol.data.shape == (3, 24, 24) and vol.data.dtype == np.float32
    assert np.array_equal(vol.affine, acquisition.affine)
    assert vol.attrs["method"] == name and np.all(np.isfinite(vol.data))
    assert calls and calls[-1][0] == calls[-1][1]


def test_admm_weights_adapt_to_the_noise_and_record_what_was_chosen(acquisition):
    """lam left null: noise estimated (from noise_i0 when stated, else the data), lam = lam_z = the rule."""
    from dataclasses import replace

    from models.classical.ct import ADMM_LAM_RULE, tuned_admm_settings
    from models.physics.ct.noise import DETAIL_MAD, PHOTON_COUNT, photon_count_sigma, sinogram_scale
    from pipelines.simulate.ct import add_poisson_noise

    method = get("ct", "admm-tv")
    views = acquisition.sinogram.shape[1]
    vol = method.run(acquisition, method.check({"iterations": 2}), None)  # noise-free: no noise_i0
    chosen = vol.attrs["chosen"]
    assert set(chosen) == {"lam", "lam_z", "noise", "rule"} and set(chosen["noise"]) == {"sigma", "source"}
    assert chosen["noise"] == {"sigma": 0.0, "source": DETAIL_MAD}
    assert chosen["lam"] == chosen["lam_z"] == tuned_admm_settings(views, 0.0).lam == ADMM_LAM_RULE(views, 0.0)
    assert chosen["rule"] == ADMM_LAM_RULE.formula() and "sigma_rel" in chosen["rule"]
    tuned = tuned_admm_settings(views)
    assert vol.attrs["params"]["lam"] == chosen["lam"] and vol.attrs["params"]["lam_z"] == chosen["lam_z"]
    assert vol.attrs["params"]["rho"] == tuned.rho and vol.attrs["params"]["iterations"] == 2

    lams = []
    for i0 in (1e5, 3e3, 1e3):
        noisy = replace(acquisition, sinogram=add_poisson_noise(acquisition.sinogram, i0, np.random.default_rng(0)),
                        attrs={**acquisition.attrs, "noise_i0": i0})
        chosen = method.run(noisy, method.check({"iterations": 1}), None).attrs["chosen"]
        sigma = photon_count_sigma(noisy.sinogram, i0)
        assert chosen["noise"] == {"sigma": sigma, "source": PHOTON_COUNT}
        assert chosen["lam"] == ADMM_LAM_RULE(views, sigma / sinogram_scale(noisy.sinogram))
        lams.append(chosen["lam"])
    assert lams[0] < lams[1] < lams[2], lams  # noisier data, stronger prior

    given = method.run(acquisition, method.check({"iterations": 1, "lam": 0.02}), None).attrs
    assert given["params"]["lam"] == given["chosen"]["lam"] == 0.02
    assert given["chosen"]["lam_z"] == given["params"]["lam_z"] == ADMM_LAM_RULE(views, 0.0)
    both = method.run(acquisition, method.check({"iterations": 1, "lam": 0.02, "lam_z": 0.01}), None).attrs
    assert "chosen" not in both and both["params"]["lam_z"] == 0.01
    flat = get("ct", "admm-tv-2d")
    chosen_2d = flat.run(acquisition, flat.check({"iterations": 1}), None).attrs["chosen"]
    assert set(chosen_2d) == {"lam", "noise", "rule"} and chosen_2d["lam"] == ADMM_LAM_RULE(views, 0.0)


def test_bad_parameters_and_shapes(acquisition):
    with pytest.raises(ParamError, match="unknown parameter 'iters'"):
        get("ct", "sirt").check({"iters": 3})
    with pytest.raises(ParamError, match="parameter 'filter' is 'gauss'; allowed: one of ramp"):
        get("ct", "fbp").check({"filter": "gauss"})
    broken = CTAcquisition(sinogram=acquisition.sinogram[:, :, :-1], angles=acquisition.angles,
                           geometry=acquisition.geometry, source="broken.h5")
    with pytest.raises(InputError, match="does not match the geometry"):
        get("ct", "fbp").run(broken, get("ct", "fbp").check({}), None)
