import h5py
import numpy as np
import pytest

from models.physics.ct import fan_beam, geometry_from_dict, parallel_beam
from pipelines.data import CTAcquisition, InputError
from pipelines.io.sinogram import FORMAT_VERSION, default_affine, read_sinogram, write_sinogram


def _acq(geom, slices=3, reference=True):
    rng = np.random.default_rng(0)
    sino = rng.random((slices, *geom.sinogram_shape), dtype=np.float32)
    ref = rng.random((slices, *geom.image_shape), dtype=np.float32) if reference else None
    affine = default_affine(geom.image_shape, slices, geom.pixel_size, 2.5)
    return CTAcquisition(sinogram=sino, angles=geom.angles_array(), geometry=geom.to_dict(), reference=ref,
                         affine=affine, attrs={"source": "test", "noise_i0": 1e5})


@pytest.mark.parametrize("geom", [parallel_beam(16, 5, arc_deg=120), fan_beam(16, 7, detector_type="equiangular")],
                         ids=["parallel", "fan"])
def test_round_trip(tmp_path, geom):
    acq = _acq(geom)
    path = write_sinogram(tmp_path / "s.h5", acq)
    back = read_sinogram(path)
    assert back.sinogram.dtype == np.float32 and back.sinogram.shape == acq.sinogram.shape
    assert np.array_equal(back.sinogram, acq.sinogram)
    assert np.array_equal(back.angles, acq.angles)
    assert np.array_equal(back.reference, acq.reference)
    assert np.allclose(back.affine, acq.affine)
    assert back.attrs["noise_i0"] == 1e5 and back.attrs["attenuation_units"] == "1/mm"
    assert geometry_from_dict(back.geometry, back.angles) == geom
    assert back.source == str(path)
    with h5py.File(path) as f:  # the documented layout
        assert f.attrs["format_version"] == FORMAT_VERSION
        assert f.attrs["geometry"] == geom.to_dict()["type"]
        assert f["sinogram"].dtype == np.float32


def test_without_reference_and_affine_defaults(tmp_path):
    geom = parallel_beam(8, 4)
    acq = _acq(geom, slices=1, reference=False)
    path = write_sinogram(tmp_path / "s.h5", acq)
    with h5py.File(path, "a") as f:
        del f.attrs["affine"]
    back = read_sinogram(path)
    assert back.reference is None
    assert np.allclose(back.affine, default_affine((8, 8), 1, 1.0))


def _write_raw(path, **datasets):
    attrs = datasets.pop("attrs", {"geometry": "parallel", "num_detectors": 12, "image_shape": [8, 8],
                                   "pixel_size": 1.0, "detector_spacing": 1.0})
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
        f.attrs.update(attrs)
    return path


@pytest.mark.parametrize("case, match", [
    ("angles_mismatch", "5 angles for 4 views"),
    ("non_finite", "non-finite"),
    ("wrong_ndim", "slices, views, detectors"),
    ("missing_angles", "missing dataset 'angles'"),
    ("missing_sinogram", "missing dataset 'sinogram'"),
    ("detector_mismatch", "detectors"),
    ("reference_shape", "reference shape"),
    ("newer_version", "newer"),
    ("missing_geometry", "missing attribute 'geometry'"),
    ("bad_geometry", "invalid geometry"),
])
def test_bad_files_raise_input_error(tmp_path, case, match):
    good = np.ones((2, 4, 12), np.float32)
    angles = np.linspace(0, np.pi, 4, endpoint=False)
    path = tmp_path / f"{case}.h5"
    if case == "angles_mismatch":
        _write_raw(path, sinogram=good, angles=np.zeros(5))
    elif case == "non_finite":
        bad = good.copy()
        bad[1, 2, 3] = np.nan
        _write_raw(path, sinogram=bad, angles=angles)
    elif case == "wrong_ndim":
        _write_raw(path, sinogram=np.ones((2, 2, 4, 12), np.float32), angles=angles)
    elif case == "missing_angles":
        _write_raw(path, sinogram=good)
    elif case == "missing_sinogram":
        _write_raw(path, angles=angles)
    elif case == "detector_mismatch":
        _write_raw(path, sinogram=np.ones((2, 4, 10), np.float32), angles=angles)
    elif case == "reference_shape":
        _write_raw(path, sinogram=good, angles=angles, reference=np.ones((2, 8, 9), np.float32))
    elif case == "newer_version":
        _write_raw(path, sinogram=good, angles=angles, attrs={"geometry": "parallel", "num_detectors": 12,
                                                               "image_shape": [8, 8], "format_version": 99})
    elif case == "missing_geometry":
        _write_raw(path, sinogram=good, angles=angles, attrs={"image_shape": [8, 8]})
    elif case == "bad_geometry":
        _write_raw(path, sinogram=good, angles=angles, attrs={"geometry": "cone", "image_shape": [8, 8]})
    with pytest.raises(InputError, match=match) as info:
        read_sinogram(path)
    assert str(path) in str(info.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_sinogram(tmp_path / "nope.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5"):
        read_sinogram(text)


def test_writer_rejects_inconsistent_acquisitions(tmp_path):
    geom = parallel_beam(8, 4)
    acq = _acq(geom)
    acq.angles = acq.angles[:3]
    with pytest.raises(InputError, match="3 angles for 4 views"):
        write_sinogram(tmp_path / "x.h5", acq)
    acq = _acq(geom)
    acq.sinogram[0, 0, 0] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        write_sinogram(tmp_path / "x.h5", acq)
    acq = _acq(geom)
    acq.sinogram = acq.sinogram[0]
    with pytest.raises(InputError, match="slices, views, detectors"):
        write_sinogram(tmp_path / "x.h5", acq)
    assert not (tmp_path / "x.h5").exists()
