import h5py
import numpy as np
import pytest
from job_inputs import write_ismrmrd

from pipelines.data import CTAcquisition, InputError, MRIAcquisition
from pipelines.io.detect import load_acquisition
from pipelines.io.fastmri import read_fastmri, write_fastmri


def _fastmri(tmp_path):
    rng = np.random.default_rng(0)
    kspace = (rng.standard_normal((3, 2, 8, 6)) + 1j * rng.standard_normal((3, 2, 8, 6))).astype(np.complex64)
    return write_fastmri(tmp_path / "f.h5", MRIAcquisition(kspace=kspace)), kspace


def test_fastmri_files_go_to_the_fastmri_reader_with_options(tmp_path):
    path, kspace = _fastmri(tmp_path)
    acq = load_acquisition(path, slices=[2, 0])
    assert isinstance(acq, MRIAcquisition)
    np.testing.assert_array_equal(acq.kspace, kspace[[2, 0]])
    np.testing.assert_array_equal(acq.kspace, read_fastmri(path, slices=[2, 0]).kspace)


@pytest.mark.parametrize("group", ["dataset", "scan_1"])
def test_ismrmrd_files_go_to_the_ismrmrd_reader(tmp_path, group):
    path = write_ismrmrd(tmp_path / "raw.h5", group)
    acq = load_acquisition(path)
    assert isinstance(acq, MRIAcquisition) and acq.kspace.shape == (1, 2, 8, 6)
    assert acq.attrs["acquisition"] == "ismrmrd" and acq.attrs["dataset"] == group
    np.testing.assert_array_equal(acq.kspace[0, 0, 3], np.arange(1, 7))
    assert load_acquisition(path, remove_oversampling=False).kspace.shape == (1, 2, 8, 6)


def test_sinogram_files_go_to_the_sinogram_reader(tmp_path):
    path = tmp_path / "ct.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("sinogram", data=np.ones((2, 12, 16), np.float32))
        f.create_dataset("angles", data=np.linspace(0, np.pi, 12, endpoint=False))
    try:
        import pipelines.io.sinogram  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="'sinogram' dataset, but the sinogram reader is not available"):
            load_acquisition(path)
        return
    try:
        acq = load_acquisition(path)
    except InputError as err:       # the sinogram reader's own complaint about this minimal file
        assert "not a known raw-data layout" not in str(err) and "not available" not in str(err)
    else:
        assert isinstance(acq, CTAcquisition)


def test_unknown_layout_lists_what_was_found(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((4, 5)))
        f.create_group("meta").create_dataset("info", data=np.zeros(2))
    with pytest.raises(InputError) as err:
        load_acquisition(path)
    message = str(err.value)
    assert str(path) in message and "not a known raw-data layout" in message
    assert "images (4, 5)" in message and "meta/info (2,)" in message


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_acquisition(tmp_path / "absent.h5")
    (tmp_path / "x.h5").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="not a readable HDF5 file") as err:
        load_acquisition(tmp_path / "x.h5")
    assert str(tmp_path / "x.h5") in str(err.value)
