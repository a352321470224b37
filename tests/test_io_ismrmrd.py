import json
import subprocess
from functools import partial

import h5py
import ismrmrd
import numpy as np
import pytest
import torch
from input_errors import expect_input_error
from system_deps import require_tool

from models.classical.mri import zero_filled
from pipelines.data import InputError
from pipelines.io.fastmri import read_fastmri, write_fastmri
from pipelines.io.ismrmrd_mrd import read_ismrmrd
from pipelines.io.mrd_header import make_ismrmrd_header

GENERATOR = "ismrmrd_generate_cartesian_shepp_logan"


def _generate(tmp_path, name, *args):
    """Run the ISMRMRD reference generator; a missing one fails the test with the install hint."""
    out = tmp_path / name
    generator = require_tool(GENERATOR, "ismrmrd-tools")
    subprocess.run([generator, "-o", str(out), *args], check=True, capture_output=True, timeout=60)
    return out


def _complex(ds):
    arr = ds[()]
    return arr["real"] + 1j * arr["imag"]


def _truth(path):
    """The generator's own phantom, coil maps and oversampled coil images, in our (H=x, W=y) orientation."""
    with h5py.File(path, "r") as f:
        phantom = _complex(f["dataset/phantom"])[0].T              # stored (y, x)
        csm = _complex(f["dataset/csm"])[0].transpose(0, 2, 1)     # (coils, x, y)
        coil_images = _complex(f["dataset/coil_images"])[0].transpose(0, 2, 1)  # (coils, 2x, y)
    return phantom, csm, coil_images


def _image(kspace, mask=None):
    return zero_filled(torch.from_numpy(kspace), None if mask is None else torch.from_numpy(mask)).abs().numpy()


def test_shepp_logan_from_the_ismrmrd_generator_is_reconstructed_exactly(tmp_path):
    n, coils = 32, 4
    path = _generate(tmp_path, "clean.h5", "-m", str(n), "-c", str(coils), "-O", "2", "-n", "0", "-C")
    acq = read_ismrmrd(path)
    phantom, csm, coil_images = _truth(path)

    assert acq.kspace.shape == (1, coils, n, n) and acq.kspace.dtype == np.complex64
    assert acq.num_coils == coils and acq.recon_shape == (n, n)
    assert acq.attrs["skipped_acquisitions"] == {"noise": 1}
    assert acq.attrs["readout_oversampling_removed"]
    np.testing.assert_array_equal(acq.mask, np.ones((1, n), np.float32))
    # coil images: the generator's own, cropped from its 2x oversampled readout FOV
    ours = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(acq.kspace[0], axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(ours, coil_images[:, n // 2:n // 2 + n], atol=1e-5)
    # RSS image = |phantom| * sqrt(sum |csm|^2)
    expected = np.abs(phantom) * np.sqrt((np.abs(csm) ** 2).sum(axis=0))
    np.testing.assert_allclose(_image(acq.kspace, acq.mask)[0], expected, atol=1e-5)
    # pixel size from reconSpace FOV / matrix (300 mm / 32), slice thickness 6 mm
    np.testing.assert_allclose(np.linalg.norm(acq.affine[:3, :3], axis=0), [300 / n, 300 / n, 6.0])

    # without oversampling removal the readout keeps 2n samples and the crop is left to recon_shape
    raw = read_ismrmrd(path, remove_oversampling=False)
    assert raw.kspace.shape == (1, coils, 2 * n, n) and raw.recon_shape == (n, n)
    np.testing.assert_allclose(_image(raw.kspace)[0, n // 2:n // 2 + n], expected, atol=1e-5)
    # each readout sits at its ky column exactly as the ismrmrd package reads it
    dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        for i in (1, 7, n):                              # acquisition 0 is the noise scan
            a = dset.read_acquisition(i)
            assert not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
            np.testing.assert_array_equal(raw.kspace[0, :, :, a.idx.kspace_encode_step_1], a.data)
        assert dset.read_acquisition(0).is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    finally:
        dset.close()


def test_noisy_shepp_logan_correlates_with_the_phantom(tmp_path):
    path = _generate(tmp_path, "noisy.h5", "-m", "48", "-c", "8", "-n", "0.05", "-C")
    acq = read_ismrmrd(path)
    phantom, csm, _ = _truth(path)
    expected = np.abs(phantom) * np.sqrt((np.abs(csm) ** 2).sum(axis=0))
    image = _image(acq.kspace, acq.mask)[0]
    assert np.corrcoef(image.ravel(), expected.ravel())[0, 1] > 0.97
    assert acq.num_coils == 8 and acq.attrs["skipped_acquisitions"] == {"noise": 1}


def test_undersampled_shepp_logan_mask_and_calibration(tmp_path):
    n = 32
    path = _generate(tmp_path, "acc.h5", "-m", str(n), "-c", "4", "-a", "2", "-w", "8", "-r", "2", "-n", "0")
    acq = read_ismrmrd(path)
    expected = np.zeros(n, np.float32)
    expected[0::2] = 1                       # repetition 0 samples the even lines ...
    expected[12:20] = 1                      # ... plus the 8 calibration lines n/2 - 4 .. n/2 + 3
    np.testing.assert_array_equal(acq.mask, expected[None])
    assert acq.num_low_frequencies == 8      # calibration-flagged lines, not the 9-line centre run
    assert acq.attrs["acceleration"] == 2
    assert acq.attrs["repetitions_available"] == [0, 1, 2, 3] and acq.attrs["selected"]["repetition"] == 0
    assert np.all(acq.kspace[..., expected == 0] == 0)
    assert np.all(np.abs(acq.kspace[..., expected == 1]).sum(axis=(0, 1, 2)) > 0)

    odd = read_ismrmrd(path, repetition=1)
    expected_odd = np.zeros(n, np.float32)
    expected_odd[1::2] = 1
    expected_odd[12:20] = 1
    np.testing.assert_array_equal(odd.mask, expected_odd[None])
    # both repetitions sample the same object: identical calibration lines (noise-free)
    np.testing.assert_allclose(odd.kspace[..., 12:20], acq.kspace[..., 12:20], atol=1e-5)
    with pytest.raises(InputError, match=r"repetition 7 not in the file \(present: \[0, 1, 2, 3\]\)"):
        read_ismrmrd(path, repetition=7)


# ------------------------------------------------- files written with the ismrmrd package

NX, NY, RX, COILS = 16, 12, 8, 3
READ, PHASE, SLICE = (0.0, 0.6, 0.8), (1.0, 0.0, 0.0), (0.0, -0.8, 0.6)


def _line(slice_, ky, coils=COILS, samples=NX):
    """Deterministic, distinct readout data for (slice, ky)."""
    rng = np.random.default_rng(1000 * slice_ + ky)
    return (rng.standard_normal((coils, samples)) + 1j * rng.standard_normal((coils, samples))).astype(np.complex64)


def _acq(data, ky=0, slice_=0, center=None, flags=(), average=0, repetition=0, **fields):
    acq = ismrmrd.Acquisition.from_array(data, center_sample=data.shape[1] // 2 if center is None else center,
                                         **fields)
    acq.idx.kspace_encode_step_1 = ky
    acq.idx.slice = slice_
    acq.idx.average = average
    acq.idx.repetition = repetition
    for flag in flags:
        acq.set_flag(flag)
    acq.read_dir[:] = READ
    acq.phase_dir[:] = PHASE
    acq.slice_dir[:] = SLICE
    acq.position[:] = tuple(np.array([10.0, -20.0, 30.0]) + (slice_ * 5.0) * np.array(SLICE))
    return acq


def _write(path, acquisitions, header=None, dataset="dataset"):
    dset = ismrmrd.Dataset(str(path), dataset, create_if_needed=True)
    try:
        dset.write_xml_header(header or make_ismrmrd_header((NX, NY, 1), (RX, NY, 1), (80.0, 120.0, 5.0),
                                                            num_coils=COILS, num_slices=2))
        for acq in acquisitions:
            dset.append_acquisition(acq)
    finally:
        dset.close()
    return path


def _package_file(tmp_path, lines, name="pkg.h5", **kw):
    rng = np.random.default_rng(0)
    acqs = [_acq(_line(99, 0), flags=[ismrmrd.ACQ_IS_NOISE_MEASUREMENT])]
    order = [(s, ky) for s in (0, 1) for ky in lines]
    for s, ky in (order[i] for i in rng.permutation(len(order))):
        acqs.append(_acq(_line(s, ky), ky=ky, slice_=s))
    acqs.insert(5, _acq(_line(98, 3), ky=3, flags=[ismrmrd.ACQ_IS_NAVIGATION_DATA]))
    acqs.insert(9, _acq(_line(97, 4), ky=4, flags=[ismrmrd.ACQ_IS_PHASECORR_DATA]))
    return _write(tmp_path / name, acqs, **kw)


def test_package_written_file_exact_placement(tmp_path):
    lines = [0, 2, 3, 4, 5, 6, 7, 9, 11]
    path = _package_file(tmp_path, lines)
    acq = read_ismrmrd(path, remove_oversampling=False)
    assert acq.kspace.shape == (2, COILS, NX, NY)
    assert acq.attrs["skipped_acquisitions"] == {"noise": 1, "navigation": 1, "phasecorr": 1}
    mask = np.zeros(NY, np.float32)
    mask[lines] = 1
    np.testing.assert_array_equal(acq.mask, mask[None])
    assert acq.num_low_frequencies == 6       # no calibration flags: centre run 2..7 around column 6
    for s in (0, 1):
        for ky in range(NY):
            expected = _line(s, ky) if ky in lines else np.zeros((COILS, NX), np.complex64)
            np.testing.assert_array_equal(acq.kspace[s, :, :, ky], expected)
    assert acq.recon_shape == (RX, NY)

    # readout oversampling removed: the image is the central RX rows of the full-FOV image
    cropped = read_ismrmrd(path)
    assert cropped.kspace.shape == (2, COILS, RX, NY)
    full = _image(acq.kspace)
    np.testing.assert_allclose(_image(cropped.kspace), full[:, (NX - RX) // 2:(NX - RX) // 2 + RX], atol=1e-5)


def test_package_written_file_geometry(tmp_path):
    path = _package_file(tmp_path, list(range(NY)))
    acq = read_ismrmrd(path)
    a = acq.affine
    lps = np.diag([-1.0, -1.0, 1.0])
    pixel_h, pixel_w = 80.0 / RX, 120.0 / NY
    np.testing.assert_allclose(a[:3, 0], lps @ (np.array(PHASE) * pixel_w), atol=1e-6)   # columns run along phase
    np.testing.assert_allclose(a[:3, 1], lps @ (np.array(READ) * pixel_h), atol=1e-6)    # rows along readout
    np.testing.assert_allclose(a[:3, 2], lps @ (5.0 * np.array(SLICE)), atol=1e-5)       # slice centre to centre
    # the FOV centre pixel (W//2, H//2) of slice 0 is at the slice position
    np.testing.assert_allclose((a @ [NY // 2, RX // 2, 0, 1])[:3], lps @ [10.0, -20.0, 30.0], atol=1e-5)


def test_slice_selection_and_conversion_to_fastmri(tmp_path):
    path = _package_file(tmp_path, list(range(0, NY, 2)) + [5, 7])
    full = read_ismrmrd(path)
    second = read_ismrmrd(path, slices=[1])
    np.testing.assert_array_equal(second.kspace, full.kspace[1:])
    np.testing.assert_allclose(second.affine[:3, 3], (full.affine @ [0, 0, 1, 1])[:3], atol=1e-5)
    assert second.attrs["slice_ids"] == [1]
    with pytest.raises(InputError, match="out of range for 2 slices"):
        read_ismrmrd(path, slices=[2])
    # ISMRMRD in, fastMRI out, same acquisition back
    back = read_fastmri(write_fastmri(tmp_path / "converted.h5", full))
    np.testing.assert_array_equal(back.kspace, full.kspace)
    np.testing.assert_array_equal(back.mask, full.mask)
    np.testing.assert_array_equal(back.affine, full.affine)
    assert back.recon_shape == full.recon_shape and back.num_low_frequencies == full.num_low_frequencies
    assert back.header_xml == full.header_xml
    assert json.loads(back.attrs["skipped_acquisitions"]) == full.attrs["skipped_acquisitions"]


def test_averages_are_averaged_and_asymmetric_echo_is_centred(tmp_path):
    samples, center = 12, 4                  # partial echo: 4 samples before the centre, 8 from it
    acqs = []
    for ky in range(NY):
        acqs.append(_acq(_line(0, ky, samples=samples), ky=ky, center=center))
    acqs.append(_acq(3 * _line(0, 5, samples=samples), ky=5, center=center, average=1))
    path = _write(tmp_path / "echo.h5", acqs)
    acq = read_ismrmrd(path, remove_oversampling=False)
    first = NX // 2 - center
    assert first == 4
    np.testing.assert_array_equal(acq.kspace[0, :, :first, :], 0)
    np.testing.assert_array_equal(acq.kspace[0, :, first:, 0], _line(0, 0, samples=samples))
    np.testing.assert_allclose(acq.kspace[0, :, first:, 5], 2 * _line(0, 5, samples=samples), rtol=1e-6)
    assert acq.attrs["max_averages"] == 2


def test_ky_center_from_encoding_limits_places_partial_fourier(tmp_path):
    # 10 of 12 lines, counters 0..9 with the k-space centre at counter 4: columns 2..11
    header = make_ismrmrd_header((NX, NY, 1), (NX, NY, 1), (80.0, 120.0, 5.0), ky_center=4)
    path = _write(tmp_path / "pf.h5", [_acq(_line(0, ky), ky=ky) for ky in range(10)], header=header)
    acq = read_ismrmrd(path)
    np.testing.assert_array_equal(acq.mask[0], [0, 0] + [1] * 10)
    np.testing.assert_array_equal(acq.kspace[0, :, :, 2], _line(0, 0))


# ---------------------------------------------------------------- bad input

_expect = partial(expect_input_error, read_ismrmrd)


def test_error_missing_dataset_group_and_parts(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_group("scan")
    _expect(path, "no ISMRMRD group '/dataset'", "scan")
    _write(tmp_path / "nodata.h5", [])
    _expect(tmp_path / "nodata.h5", "has no 'data' dataset")
    path = tmp_path / "noxml.h5"
    with h5py.File(path, "w") as f:
        f.create_group("dataset").create_dataset("data", data=np.zeros(3))
    _expect(path, "has no 'xml' dataset")
    (tmp_path / "text.h5").write_text("hello")
    _expect(tmp_path / "text.h5", "not a readable HDF5 file")
    _expect(tmp_path / "missing.h5", "file not found")


def test_error_non_cartesian(tmp_path):
    header = make_ismrmrd_header((NX, NY, 1), (NX, NY, 1), (80.0, 120.0, 5.0), trajectory="radial")
    path = _write(tmp_path / "radial.h5", [_acq(_line(0, 0))], header=header)
    _expect(path, "trajectory is 'radial'", "only Cartesian")


def test_error_no_imaging_acquisitions(tmp_path):
    noise = [_acq(_line(0, i), flags=[ismrmrd.ACQ_IS_NOISE_MEASUREMENT]) for i in range(3)]
    path = _write(tmp_path / "noise.h5", noise)
    _expect(path, "no imaging acquisitions among 3", "3 noise")


def test_error_inconsistent_readouts_and_coils(tmp_path):
    path = _write(tmp_path / "len.h5", [_acq(_line(0, 0)), _acq(_line(0, 1, samples=NX - 2), ky=1)])
    _expect(path, "inconsistent readout lengths", "[14, 16]")
    path = _write(tmp_path / "coils.h5", [_acq(_line(0, 0)), _acq(_line(0, 1, coils=2), ky=1)])
    _expect(path, "inconsistent coil counts", "[2, 3]")


def test_error_3d_and_out_of_range(tmp_path):
    acq = _acq(_line(0, 0))
    acq.idx.kspace_encode_step_2 = 1
    _expect(_write(tmp_path / "3d.h5", [acq]), "3D encoding", "not supported")
    _expect(_write(tmp_path / "ky.h5", [_acq(_line(0, 0), ky=NY + 3)]), f"kspace_encode_step_1 {NY + 3}",
            f"encoded y size {NY}")
    _expect(_write(tmp_path / "long.h5", [_acq(_line(0, 0, samples=NX + 4))]), "does not fit the encoded x size")


def test_noise_scan_gives_the_imaging_noise_level(tmp_path):
    """The generator adds complex noise of std 0.05 per real part (sigma = 0.05 sqrt 2) to the noise scan and to every
    readout alike: the level read from the noise scan must match it and the level left in the imaging k-space."""
    from models.physics.mri.noise import estimate_kspace_sigma

    with_scan = read_ismrmrd(_generate(tmp_path, "noisy.h5", "-m", "64", "-c", "4", "-O", "2", "-n", "0.05", "-C"))
    sigma = with_scan.attrs["noise_scan_sigma"]
    assert sigma == pytest.approx(0.05 * np.sqrt(2), rel=0.1)
    assert estimate_kspace_sigma(with_scan.kspace, with_scan.mask) == pytest.approx(sigma, rel=0.1)
    without = read_ismrmrd(_generate(tmp_path, "no-scan.h5", "-m", "32", "-c", "4", "-n", "0.05"))
    assert "noise_scan_sigma" not in without.attrs
