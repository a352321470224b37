import numpy as np
import pytest
import torch

from models.classical.mri import cg_sense, zero_filled
from models.physics.mri.sensitivity import acs_maps
from pipelines.metrics import psnr
from pipelines.simulate import brain, mri

CFG = mri.MRISimulationConfig(size=64, coils=4, slices=2)


def _slab(split="test", contrast="t1", orientation="axial", acceleration=4.0, cfg=CFG, seed=0):
    start = mri.slab_starts(orientation, split, cfg)[0]
    return mri.simulate_slab(contrast, orientation, start, acceleration, cfg, seed)


def test_splits_are_disjoint_and_separated():
    cfg = mri.MRISimulationConfig(size=64, slices=4)
    span = (cfg.slices - 1) * cfg.slice_step
    covered = {}
    for split in mri.SPLITS:
        for start in mri.slab_starts("axial", split, cfg):
            covered[split] = covered.get(split, set()) | set(range(start, start + span + 1))
    assert covered["train"] and covered["val"] and covered["test"]
    assert not covered["train"] & covered["val"] and not covered["train"] & covered["test"]
    # no test slice is within the gap of a training slice
    gap = min(abs(a - b) for a in covered["train"] for b in covered["test"])
    assert gap > cfg.gap
    # held-out orientations are never trained on: validation (the flag's calibration) and test slabs only
    for orientation in ("coronal", "sagittal"):
        assert mri.slab_starts(orientation, "train", cfg) == []
        assert mri.slab_starts(orientation, "val", cfg) and mri.slab_starts(orientation, "test", cfg)


def test_slab_shapes_mask_and_reference():
    acq = _slab(acceleration=4.0)
    assert acq.kspace.shape == (2, 4, 64, 64) and acq.kspace.dtype == np.complex64
    assert acq.reference.shape == (2, 64, 64) and acq.recon_shape == (64, 64)
    assert acq.mask.shape == (1, 64)
    assert acq.num_low_frequencies >= min(mri.MIN_CENTER_LINES, int(0.7 * 64 / 4))
    # unsampled columns are exactly zero, sampled ones are not
    col_energy = np.abs(acq.kspace).sum(axis=(0, 1, 2))
    assert np.array_equal(col_energy > 0, acq.mask[0] > 0)
    assert 2.5 < acq.kspace.shape[-1] / acq.mask.sum() < 6


def test_fully_sampled_sense_recovers_reference():
    cfg = mri.MRISimulationConfig(size=64, coils=4, slices=2, snr_db=60)
    acq = _slab(acceleration=1.0, cfg=cfg)
    assert acq.mask is None
    k = torch.from_numpy(acq.kspace)
    maps = torch.from_numpy(np.stack([acs_maps(s, 64) for s in acq.kspace]))
    image = cg_sense(k, torch.ones(1, 64), maps, lam=0, max_iter=5).abs().numpy()
    assert psnr(acq.reference, image) > 40


def test_noise_matches_snr():
    cfg = mri.MRISimulationConfig(size=64, coils=4, slices=1, snr_db=20)
    acq = _slab(acceleration=1.0, cfg=cfg)
    # corner k-space is noise-dominated: its std per real/imag part is sigma / sqrt(2)
    corner = acq.kspace[0, :, :6, :6]
    measured = np.sqrt(np.mean(np.abs(corner) ** 2))
    assert measured == pytest.approx(acq.attrs["noise_sigma"], rel=0.25)


def test_contrasts_differ_and_seed_is_deterministic():
    a, b = _slab(contrast="t2", seed=3), _slab(contrast="t2", seed=3)
    assert np.array_equal(a.kspace, b.kspace)
    flair = _slab(contrast="flair", seed=3)
    # CSF is bright on T2 and dark on FLAIR: the images must not be proportional
    corr = np.corrcoef(a.reference.ravel(), flair.reference.ravel())[0, 1]
    assert corr < 0.95


def test_affine_places_slices_in_the_template_space():
    cfg = mri.MRISimulationConfig(size=120, coils=2, slices=3, slice_step=2)
    acq = _slab(cfg=cfg, acceleration=1.0)
    spacing = np.linalg.norm(acq.affine[:3, :3], axis=0)
    assert np.allclose(spacing, [brain.CUBE_MM / 120, brain.CUBE_MM / 120, 2.0])
    # the image centre maps near the template's centre of mass (MNI origin lies inside the brain)
    centre = acq.affine @ np.array([59.5, 59.5, 0, 1])
    assert abs(centre[0]) < 5 and abs(centre[1]) < 25


def test_zero_filled_is_worse_at_8x_than_4x():
    r4, r8 = _slab(acceleration=4.0), _slab(acceleration=8.0)
    zf4 = zero_filled(torch.from_numpy(r4.kspace)).abs().numpy()
    zf8 = zero_filled(torch.from_numpy(r8.kspace)).abs().numpy()
    assert psnr(r4.reference, zf4) > psnr(r8.reference, zf8)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="size"):
        mri.MRISimulationConfig(size=4).validate()
    with pytest.raises(ValueError, match="unknown contrast"):
        brain.contrast_volume("t3")
    with pytest.raises(ValueError, match="unknown split"):
        mri.slab_starts("axial", "holdout", CFG)


def test_gamma_augmentation_changes_contrast_but_keeps_tissue_order():
    from dataclasses import replace

    from scipy.stats import spearmanr

    plain = _slab(contrast="t2", acceleration=1.0, seed=5)
    same = _slab(contrast="t2", acceleration=1.0, seed=5, cfg=replace(CFG, gamma_range=(1.0, 1.0)))
    assert np.allclose(plain.kspace, same.kspace, rtol=1e-5, atol=1e-6)  # the augmentation has its own generator
    assert plain.attrs["intensity_gamma"] == 1.0

    squared = _slab(contrast="t2", acceleration=1.0, seed=5, cfg=replace(CFG, gamma_range=(2.0, 2.0)))
    assert squared.attrs["intensity_gamma"] == pytest.approx(2.0)
    inside = plain.reference > 0.1 * plain.reference.max()
    a, b = plain.reference[inside], squared.reference[inside]
    assert spearmanr(a, b).statistic > 0.99  # same order of intensities ...
    assert np.corrcoef(a / a.max(), b / b.max())[0, 1] < 0.99 and np.median(b / b.max()) < np.median(a / a.max())
    drawn = {_slab(acceleration=1.0, seed=s, cfg=replace(CFG, gamma_range=(0.5, 2.0))).attrs["intensity_gamma"]
             for s in range(6)}
    assert len(drawn) == 6 and all(0.5 <= g <= 2.0 for g in drawn)
    with pytest.raises(ValueError, match="gamma range"):
        replace(CFG, gamma_range=(2.0, 1.0)).validate()


def test_write_set_writes_fastmri_files_and_reports_progress(tmp_path):
    from pipelines.io.fastmri import read_fastmri

    specs = mri.plan("test", ("t1",), ("axial",), (4.0,), CFG, max_files=2)
    calls = []
    paths = mri.write_set(tmp_path / "set", specs, CFG, progress=lambda done, total: calls.append((done, total)))
    assert [p.name for p in paths] == [s.file_name for s in specs] and calls == [(1, 2), (2, 2)]
    acq = read_fastmri(paths[0])
    expected = mri.simulate_slab("t1", "axial", specs[0].first_index, 4.0, CFG, specs[0].seed)
    assert np.array_equal(acq.kspace, expected.kspace) and np.array_equal(acq.reference, expected.reference)
