import numpy as np
import pytest

import pipelines.ct_methods  # noqa: F401  (registers the CT methods)
from pipelines import reconstructors
from pipelines.data import CTAcquisition, ImageVolume, InputError
from pipelines.io.sinogram import read_sinogram
from pipelines.simulate.ct import simulate_ct_dataset

# The registry is read directly (not through get(), which imports every method module): in a worktree whose
# editable install points at another checkout, the MRI module found there may not import here.
_REG = reconstructors._REGISTRY

SMALL = {"fbp": {}, "sirt": {"iterations": 10}, "cgls": {"iterations": 5}, "admm-tv": {"iterations": 5},
         "admm-tv-2d": {"iterations": 5}}


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory) -> CTAcquisition:
    out = tmp_path_factory.mktemp("ct")
    return read_sinogram(simulate_ct_dataset(out, views=6, geometry="fan", source="shepp-logan", size=24, slices=3)[0])


def test_ct_methods_registered():
    names = {name for modality, name in _REG if modality == "ct"}
    assert {"fbp", "sirt", "admm-tv", "cgls", "admm-tv-2d"} <= names


@pytest.mark.parametrize("name", list(SMALL))
def test_each_method_returns_a_volume_with_the_acquisition_affine(acquisition, name):
    calls = []
    vol = _REG[("ct", name)].run(acquisition, SMALL[name], lambda i, n: calls.append((i, n)))
    assert isinstance(vol, ImageVolume)
    assert vol.data.shape == (3, 24, 24) and vol.data.dtype == np.float32
    assert np.array_equal(vol.affine, acquisition.affine)
    assert vol.attrs["method"] == name and np.all(np.isfinite(vol.data))
    assert calls and calls[-1][0] == calls[-1][1]


def test_admm_defaults_come_from_the_tuned_table(acquisition):
    vol = _REG[("ct", "admm-tv")].run(acquisition, {"iterations": 2}, None)
    assert vol.attrs["params"]["lam"] is not None and vol.attrs["params"]["iterations"] == 2


def test_bad_parameters_and_shapes(acquisition):
    with pytest.raises(ValueError, match="unknown parameter"):
        _REG[("ct", "sirt")].run(acquisition, {"iters": 3}, None)
    with pytest.raises(ValueError, match="unknown FBP filter"):
        _REG[("ct", "fbp")].run(acquisition, {"filter": "gauss"}, None)
    broken = CTAcquisition(sinogram=acquisition.sinogram[:, :, :-1], angles=acquisition.angles,
                           geometry=acquisition.geometry, source="broken.h5")
    with pytest.raises(InputError, match="does not match the geometry"):
        _REG[("ct", "fbp")].run(broken, {}, None)
