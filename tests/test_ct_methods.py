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


def test_admm_defaults_come_from_the_tuned_table(acquisition):
    from models.classical.ct import tuned_admm_settings

    method = get("ct", "admm-tv")
    vol = method.run(acquisition, method.check({"iterations": 2}), None)
    tuned = tuned_admm_settings(acquisition.sinogram.shape[1])
    assert vol.attrs["params"]["lam"] == tuned.lam and vol.attrs["params"]["lam_z"] == tuned.lam_z
    assert vol.attrs["params"]["rho"] == tuned.rho and vol.attrs["params"]["iterations"] == 2


def test_bad_parameters_and_shapes(acquisition):
    with pytest.raises(ParamError, match="unknown parameter 'iters'"):
        get("ct", "sirt").check({"iters": 3})
    with pytest.raises(ParamError, match="parameter 'filter' is 'gauss'; allowed: one of ramp"):
        get("ct", "fbp").check({"filter": "gauss"})
    broken = CTAcquisition(sinogram=acquisition.sinogram[:, :, :-1], angles=acquisition.angles,
                           geometry=acquisition.geometry, source="broken.h5")
    with pytest.raises(InputError, match="does not match the geometry"):
        get("ct", "fbp").run(broken, get("ct", "fbp").check({}), None)
