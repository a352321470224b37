import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

from models.physics.ct import CTProjector, geometry_from_dict
from pipelines.data import InputError
from pipelines.io.nifti import write_nifti
from pipelines.io.sinogram import read_sinogram
from pipelines.simulate.ct import MU_WATER, add_poisson_noise, hu_to_mu, simulate_ct_dataset


def _reprojection_error(acq) -> float:
    geom = geometry_from_dict(acq.geometry, acq.angles)
    sino = CTProjector(geom).forward(torch.from_numpy(acq.reference)).numpy()
    return float(np.linalg.norm(sino - acq.sinogram) / np.linalg.norm(acq.sinogram))


def test_shepp_logan_parallel(tmp_path):
    calls = []
    paths = simulate_ct_dataset(tmp_path, views=8, source="shepp-logan", size=32, slices=4,
                                progress=lambda i, n: calls.append((i, n)))
    assert [p.name for p in paths] == ["shepp-logan.h5"] and calls == [(1, 1)]
    acq = read_sinogram(paths[0])
    assert acq.sinogram.shape == (4, 8, 46) and acq.reference.shape == (4, 32, 32)
    assert np.allclose(acq.angles, np.arange(8) * np.pi / 8)
    assert acq.reference.min() >= 0
    assert acq.reference.max() == pytest.approx(2 * MU_WATER, rel=0.01)  # the skull: 1000 HU
    assert acq.attrs["attenuation_units"] == "1/mm"
    # the exact sinogram agrees with projecting the pixelated reference up to discretisation error
    assert _reprojection_error(acq) < 0.06
    assert np.allclose(np.diag(acq.affine)[:3], 8.0)  # 256 mm FOV / 32, isotropic


def test_fan_beam_limited_arc_and_ellipsoids(tmp_path):
    paths = simulate_ct_dataset(tmp_path / "fan", views=6, geometry="fan", source="ellipsoids", size=32, slices=3)
    assert len(paths) == 3
    acqs = [read_sinogram(p) for p in paths]
    assert acqs[0].geometry["type"] == "fan" and acqs[0].geometry["detector_type"] == "flat"
    assert np.allclose(acqs[0].angles, np.arange(6) * 2 * np.pi / 6)  # full orbit by default for fan beam
    assert not np.allclose(acqs[0].reference, acqs[1].reference)
    assert all(_reprojection_error(a) < 0.06 for a in acqs)
    limited = read_sinogram(simulate_ct_dataset(tmp_path / "arc", views=5, arc_deg=120.0, source="shepp-logan",
                                                size=16, slices=1)[0])
    assert np.rad2deg(limited.angles.max()) == pytest.approx(96.0)


def test_poisson_noise(tmp_path):
    clean = read_sinogram(simulate_ct_dataset(tmp_path / "a", views=4, source="shepp-logan", size=32, slices=2)[0])
    noisy = read_sinogram(simulate_ct_dataset(tmp_path / "b", views=4, source="shepp-logan", size=32, slices=2,
                                              noise_i0=1e4, seed=1)[0])
    again = read_sinogram(simulate_ct_dataset(tmp_path / "c", views=4, source="shepp-logan", size=32, slices=2,
                                              noise_i0=1e4, seed=1)[0])
    assert np.array_equal(noisy.sinogram, again.sinogram)
    diff = noisy.sinogram - clean.sinogram
    assert 0.005 < diff.std() < 0.2 and abs(diff.mean()) < 0.01
    assert noisy.attrs["noise_i0"] == 1e4
    # a ray with no transmitted photons stays finite: -log(1 / I0)
    out = add_poisson_noise(np.array([100.0, 0.0], np.float32), 1e3, np.random.default_rng(0))
    assert out[0] == pytest.approx(np.log(1e3)) and out[1] == pytest.approx(0.0, abs=0.2)
    with pytest.raises(ValueError):
        add_poisson_noise(np.zeros(2), 0.0, np.random.default_rng(0))


def test_brain_pseudo_ct(tmp_path):
    paths = simulate_ct_dataset(tmp_path, views=4, source="brain", size=32, slices=2)
    assert [p.name for p in paths] == ["brain-01.h5", "brain-02.h5", "brain-03.h5"]
    acq = read_sinogram(paths[1])
    ref = acq.reference
    assert ref.min() >= 0 and ref.max() > 1.5 * MU_WATER           # a skull
    soft = ref[(ref > 0.8 * MU_WATER) & (ref < 1.2 * MU_WATER)]
    assert soft.size > 0.2 * ref.size                               # brain tissue around water
    assert acq.affine[2, 3] + 0.5 * acq.affine[2, 2] == pytest.approx(15.0)  # slab centred at z = +15 mm MNI
    assert _reprojection_error(acq) < 0.08  # projected from a 2x finer grid


def test_user_nifti_and_dicom_sources(tmp_path):
    z, y, x = np.mgrid[:6, :40, :50]
    hu = np.full((6, 40, 50), -1000.0, np.float32)
    hu[((y - 20) ** 2 + (x - 25) ** 2) < 15**2] = 40.0
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    nifti = write_nifti(tmp_path / "vol.nii.gz", hu, affine)
    paths = simulate_ct_dataset(tmp_path / "n", views=6, source=str(nifti), size=32, slices=4)
    acq = read_sinogram(paths[0])
    assert paths[0].name == "vol.h5" and acq.reference.shape == (4, 32, 32)
    assert acq.reference[:, 16, 16] == pytest.approx(hu_to_mu(np.float32(40.0)), rel=1e-3)
    assert acq.reference[:, 0, 0] == pytest.approx(0.0)
    # same world position of the central voxel: the new grid keeps the source's centre (FOV 50 x 0.8 mm)
    assert abs(acq.affine[0, 0]) == pytest.approx(40.0 / 32)
    centre_new = acq.affine @ [15.5, 15.5, 0, 1]
    centre_src = affine @ [24.5, 19.5, 1, 1]
    assert np.allclose(centre_new[:2], centre_src[:2], atol=1e-6) and centre_new[2] == pytest.approx(centre_src[2])
    dicom = simulate_ct_dataset(tmp_path / "d", views=4, source=get_testdata_file("CT_small.dcm"), size=32, slices=1)
    assert read_sinogram(dicom[0]).reference.shape == (1, 32, 32)


def test_bad_sources(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        simulate_ct_dataset(tmp_path, views=4, source=str(tmp_path / "missing.nii.gz"))
    with pytest.raises(InputError, match="not CT"):
        simulate_ct_dataset(tmp_path, views=4, source=get_testdata_file("MR_small.dcm"))
    with pytest.raises(ValueError, match="geometry"):
        simulate_ct_dataset(tmp_path, views=4, geometry="cone", size=16, slices=1)
