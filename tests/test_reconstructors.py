"""The method registry: every method declares the parameters it takes and refuses others by name."""

import numpy as np
import pytest

from pipelines.data import MRIAcquisition
from pipelines.pipeline import reconstruct
from pipelines.reconstructors import available, check_params


def test_check_params_names_the_unknown_and_the_allowed():
    with pytest.raises(ValueError, match=r"cg-sense: unknown parameter\(s\) lamda; allowed: lam, max_iter"):
        check_params("cg-sense", {"lamda": 1.0}, {"lam": 1e-3, "max_iter": 20})
    check_params("cg-sense", {"lam": 0.1}, {"lam": 1e-3, "max_iter": 20})


@pytest.mark.parametrize("method", ["zero-filled", "cg-sense", "l1-wavelet", "rim"])
def test_mri_methods_refuse_unknown_parameters(method, single_thread):
    rng = np.random.default_rng(0)
    kspace = (rng.standard_normal((1, 2, 16, 16)) + 1j * rng.standard_normal((1, 2, 16, 16))).astype(np.complex64)
    acq = MRIAcquisition(kspace=kspace)
    with pytest.raises(ValueError, match=f"{method}: unknown parameter.*iterationz"):
        reconstruct(acq, method, {"iterationz": 3})


def test_every_method_lists_its_parameters():
    methods = {(r.modality, r.name): r for r in available()}
    assert set(methods[("mri", "cg-sense")].defaults) >= {"lam", "max_iter", "maps"}
    assert set(methods[("mri", "l1-wavelet")].defaults) >= {"lam", "max_iter", "wavelet", "maps"}
    assert set(methods[("mri", "recurrentvarnet")].defaults) == {"model_id", "engine", "fft", "providers"}
    assert set(methods[("ct", "sirt")].defaults) == {"iterations", "nonneg"}
