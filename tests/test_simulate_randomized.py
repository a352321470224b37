"""Domain-randomised training slices: drawn within their ranges, from training slabs only, reproducible."""

import csv
import json

import numpy as np
import pytest
import torch

from models.physics.mri.fft import ifft2c
from pipelines.simulate import mri
from pipelines.simulate.randomized import RandomBrainConfig, draw_slice, training_slice_indices
from pipelines.train import TrainConfig, train

SMALL = RandomBrainConfig(sizes=(40, 64), coils=(2, 5), accelerations=(2.0, 8.0))


@pytest.fixture(scope="module")
def draws():
    return [draw_slice(seed, SMALL) for seed in range(24)]


def test_draws_stay_in_their_ranges_and_cover_them(draws):
    sizes = [d.draw["size"] for d in draws]
    assert all(40 <= s <= 64 and d.kspace.shape == (d.draw["coils"], s, s) and d.reference.shape == (s, s)
               for s, d in zip(sizes, draws, strict=True))
    assert len(set(sizes)) > 5
    coils = {d.draw["coils"] for d in draws}
    assert coils <= {2, 3, 4, 5} and len(coils) >= 3
    assert {d.draw["mask"] for d in draws} == {"random", "equispaced"}
    assert {d.draw["contrast"] for d in draws} == {"template-t1", "tissue-mixture"}
    accelerations = np.array([d.draw["acceleration"] for d in draws])
    assert accelerations.min() >= 2 and accelerations.max() <= 8 and np.ptp(accelerations) > 3
    # the mask keeps about 1 / acceleration of the columns (the rounded centre block makes it inexact)
    kept = np.array([d.mask.mean() for d in draws])
    assert np.all(np.abs(kept * accelerations - 1) < 0.45)
    assert all(1 <= d.num_low_frequencies < d.mask.size for d in draws)
    snr = np.array([d.draw["snr_db"] for d in draws])
    assert snr.min() >= 15 and snr.max() <= 40


def test_contrasts_vary_in_tissue_order(draws):
    orders = {tuple(np.argsort(d.draw["intensities"])) for d in draws if d.draw["contrast"] == "tissue-mixture"}
    assert len(orders) >= 4  # CSF brightest (T2-like), darkest (FLAIR-like, T1-like) and the rest


def test_only_training_slabs_are_drawn(draws):
    cfg = mri.MRISimulationConfig()
    span = (cfg.slices - 1) * cfg.slice_step + 1
    held_out = {s + i for split in ("val", "test") for s in mri.slab_starts("axial", split, cfg) for i in range(span)}
    allowed = set(training_slice_indices().tolist())
    assert allowed and not allowed & held_out
    assert {d.draw["slice_index"] for d in draws} <= allowed


def test_kspace_is_the_reference_plus_noise_at_the_drawn_snr(draws):
    for d in draws[:6]:
        coil_images = ifft2c(torch.from_numpy(d.kspace)).numpy()
        rss = np.sqrt((np.abs(coil_images) ** 2).sum(0))
        obj = d.reference > 0.1 * d.reference.max()
        assert d.noise_sigma == pytest.approx(d.reference[obj].mean() / 10 ** (d.draw["snr_db"] / 20), rel=1e-5)
        # outside the object the coil images hold only the noise: its std is sigma per coil and part
        outside = coil_images[:, d.reference == 0]
        assert outside.std() == pytest.approx(d.noise_sigma, rel=0.1)
        assert np.abs(rss - d.reference)[obj].mean() < 2 * d.noise_sigma * np.sqrt(d.kspace.shape[0])


def test_a_seed_is_one_slice():
    a, b, c = draw_slice(5, SMALL), draw_slice(5, SMALL), draw_slice(6, SMALL)
    assert np.array_equal(a.kspace, b.kspace) and np.array_equal(a.mask, b.mask) and a.draw == b.draw
    assert a.draw != c.draw


def test_bad_ranges_are_refused_with_their_name():
    with pytest.raises(ValueError, match="unknown randomisation setting.*size"):
        RandomBrainConfig.from_dict({"size": [64, 96]})
    with pytest.raises(ValueError, match="coils must be"):
        RandomBrainConfig.from_dict({"coils": [8, 4]})
    with pytest.raises(ValueError, match="masks must be"):
        RandomBrainConfig.from_dict({"masks": ["poisson"]})
    assert RandomBrainConfig.from_dict({"sizes": [64, 96]}).sizes == (64, 96)
    assert RandomBrainConfig.from_dict(SMALL.to_dict()) == SMALL


TINY = {"num_steps": 2, "hidden_channels": 4, "num_layers": 2, "cell": "gru"}


def _cfg(steps, **extra):
    return TrainConfig(model="rim", model_config=TINY, data="randomized-brain", val_data=None, steps=steps,
                       checkpoint_every=1, warmup_steps=1, lr=1e-3, seed=2, threads=1,
                       randomize={"sizes": [32, 48], "coils": [2, 4]}, **extra)


def test_training_on_randomized_slices_is_reproducible_and_resumes(tmp_path):
    full = train(_cfg(3), tmp_path / "full")
    train(_cfg(1), tmp_path / "split")
    resumed = train(_cfg(3), tmp_path / "split", resume=True)
    a, b = torch.load(full, weights_only=True), torch.load(resumed, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = list(csv.DictReader((tmp_path / "full" / "log.csv").read_text().splitlines()))
    accelerations = [float(r["acceleration"]) for r in rows]
    assert len(set(accelerations)) == 3 and all(2 <= x <= 10 for x in accelerations)
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    assert saved["data"] == "randomized-brain" and saved["randomize"]["sizes"] == [32, 48]


def test_randomized_training_settings_are_checked():
    with pytest.raises(ValueError, match="batch_size must be 1"):
        _cfg(1, batch_size=2).check()
    with pytest.raises(ValueError, match="randomize sets the ranges"):
        TrainConfig(data="data/brain-bench/train", randomize={"sizes": [64, 96]}).check()
    with pytest.raises(ValueError, match="unknown randomisation"):
        TrainConfig(data="randomized-brain", randomize={"snr": [1, 2]}).check()


def test_cli_trains_on_randomized_slices(tmp_path, run_recon):
    config = json.dumps({"model_config": TINY, "val_data": None, "warmup_steps": 1,
                         "randomize": {"sizes": [32, 40], "coils": [2, 3]}})
    run_recon("train", "rim", "--data", "randomized-brain", "--steps", "2", "--out", str(tmp_path / "run"),
              "--config", config, "--threads", "1")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"] == "randomized-brain" and (tmp_path / "run" / "model.pt").is_file()
    bad = run_recon("train", "rim", "--data", "randomized-brain", "--out", str(tmp_path / "bad"), "--config",
                    json.dumps({"randomize": {"sizes": [400, 96]}}), check=False)
    assert bad.returncode == 2 and "sizes must be" in bad.stderr
