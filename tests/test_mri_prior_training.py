"""The MRI diffusion priors' training (``recon train ambient-prior`` / ``diffusion-prior``) at a tiny size."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from models.physics.mri.masks import calibrated_center_fraction, random_column_mask
from pipelines.data import InputError
from pipelines.simulate import mri
from pipelines.train_mri_prior import MRIPriorConfig, PriorData, further_masks, slice_mask_seed, train_mri_prior

TINY_NET = {"channels": [16, 32], "attention_levels": [False, False], "norm_num_groups": 8, "num_head_channels": 16}
SIM = mri.MRISimulationConfig(size=32, coils=4, slices=3)


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prior-data")
    starts = mri.slab_starts("axial", "train", SIM)
    for i, contrast in enumerate(("t1", "t2", "pd")):
        mri.write_set(out / "full", [mri.SlabSpec(contrast, "axial", starts[i], 1.0, seed=i)], SIM)
        mri.write_set(out / "under", [mri.SlabSpec(contrast, "axial", starts[i], 4.0, seed=i)], SIM)
    return out


def tiny(**kw) -> MRIPriorConfig:
    base = dict(size=32, model_config=TINY_NET, batch_size=4, val_slices=2, checkpoint_every=1000, val_every=1000,
                threads=2, lr=2e-3, warmup_steps=2, ema_decay=0.5)
    return MRIPriorConfig(**{**base, **kw})


def test_ambient_prior_never_reads_the_columns_its_mask_left_out(full_dir, tmp_path):
    """A fully sampled file is undersampled first: filling the columns outside each slice's training mask with
    garbage changes nothing in the trained weights."""
    garbled = tmp_path / "garbled"
    shutil.copytree(full_dir / "full", garbled)
    for path in sorted(garbled.glob("*.h5")):
        with h5py.File(path, "r+") as f:
            k = f["kspace"][()]
            for s in range(k.shape[0]):
                w = k.shape[-1]
                m = random_column_mask(w, 4.0, calibrated_center_fraction(w, 4.0), slice_mask_seed(path.name, s))
                left_out = np.asarray(m.mask).reshape(-1) == 0
                k[s][..., left_out] = 1e3 * (1 + 1j)
            f["kspace"][...] = k
    a = train_mri_prior(tiny(kind="ambient", data=str(full_dir / "full"), steps=3), tmp_path / "a")
    b = train_mri_prior(tiny(kind="ambient", data=str(garbled), steps=3), tmp_path / "b")
    wa, wb = torch.load(a), torch.load(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    data = PriorData(tiny(kind="ambient", data=str(full_dir / "full")))
    assert 0.2 < float(data.masks.mean()) < 0.45  # about 1/4 of the columns, the centre included


def test_ambient_prior_uses_undersampled_files_as_stored(full_dir):
    data = PriorData(tiny(kind="ambient", data=str(full_dir / "under")))
    with h5py.File(sorted((full_dir / "under").glob("*.h5"))[0]) as f:
        stored = np.asarray(f["mask"][()], np.float32).reshape(-1)
    assert torch.equal(data.masks[0], torch.from_numpy(stored))
    assert float(data.kspace[0][..., stored == 0].abs().max()) == 0.0


def test_further_masks_keep_the_centre_and_thin_the_rest():
    g = torch.Generator().manual_seed(0)
    w = 128
    m = torch.from_numpy(np.asarray(random_column_mask(w, 4.0, calibrated_center_fraction(w, 4.0), 3).mask,
                                    np.float32).reshape(1, -1)).repeat(200, 1)
    low = torch.full((200,), 10)
    sub = further_masks(m, low, 5.0, g)
    assert torch.all(sub <= m)
    assert torch.all(sub[:, 59:69] == 1)  # the 10 centre columns of 128
    assert abs(float(sub.sum(1).mean()) - w / 5) < 1.0  # about W / 5 columns on average
    assert len({tuple(row.tolist()) for row in sub}) > 20  # drawn afresh each time


@pytest.mark.parametrize("kind", ["ambient", "fully-sampled"])
def test_training_lowers_the_validation_loss(full_dir, tmp_path, kind):
    """Measured (20 steps, tiny net, lr 2e-3, EMA 0.5): ambient validation loss 0.237 -> 0.170 (0.72x), fully
    sampled 0.652 -> 0.409 (0.63x). Bar: below 0.85x the untrained loss; a run whose optimiser does not step
    stays at 1.0x."""
    cfg = tiny(kind=kind, data=str(full_dir / "full"), steps=20, val_every=10)
    train_mri_prior(cfg, tmp_path / "run")
    val = [json.loads(line) for line in (tmp_path / "run" / "val.jsonl").read_text().splitlines()]
    assert [v["step"] for v in val] == [0, 10, 20]
    assert val[-1]["val_loss"] < 0.85 * val[0]["val_loss"], val


def test_diffusion_prior_refuses_undersampled_files(full_dir):
    with pytest.raises(InputError, match="is undersampled; diffusion-prior trains on fully sampled"):
        PriorData(tiny(kind="fully-sampled", data=str(full_dir / "under")))


@pytest.mark.parametrize("config, message", [
    ({"kind": "other"}, "kind must be one of"),
    ({"acceleration": 0.5}, "acceleration must be"),
    ({"acceleration": 4.0, "further_acceleration": 3.0}, "must exceed acceleration"),
    ({"size": 33}, "multiple of 2"),
])
def test_bad_settings_are_refused(config, message):
    cfg = tiny(**config)
    with pytest.raises(ValueError, match=message):
        cfg.check()


def test_cli_trains_with_progress_and_refuses_bad_input(full_dir, tmp_path):
    cmd = [sys.executable, "-m", "recon_service.cli", "train", "ambient-prior", "--data", str(full_dir / "under"),
           "--out", str(tmp_path / "run"), "--steps", "2", "--config", json.dumps({
               "size": 32, "model_config": TINY_NET, "batch_size": 2, "val_slices": 2})]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "2/2" in res.stderr and (tmp_path / "run" / "model.pt").is_file()
    res = subprocess.run([sys.executable, "-m", "recon_service.cli", "train", "diffusion-prior", "--data",
                          str(tmp_path / "missing"), "--out", str(tmp_path / "r2")], capture_output=True, text=True)
    assert res.returncode == 2 and "not a directory of fastMRI-format .h5 files" in res.stderr
    res = subprocess.run([sys.executable, "-m", "recon_service.cli", "train", "diffusion-prior", "--acceleration",
                          "4", "--out", str(tmp_path / "r3")], capture_output=True, text=True)
    assert res.returncode == 2 and "--acceleration is the ambient prior's" in res.stderr


def test_zoo_ship_stages_an_mri_prior_with_card_metrics_and_a_checked_onnx_engine(full_dir, tmp_path):
    """`recon zoo ship` on an ambient-prior run: the card names the prior's kind and masks, its denoising check on
    held-out slices, and an ONNX engine that matches torch; a fully sampled run ships as its own kind."""
    from pipelines.ship_mri_prior import ship_mri_prior_run, verified_mri_prior_onnx
    from pipelines.zoo import load_model

    zoo = tmp_path / "zoo"
    train_mri_prior(tiny(kind="ambient", data=str(full_dir / "full"), steps=6), tmp_path / "run")
    card = json.loads(ship_mri_prior_run(tmp_path / "run", "tiny-ambient", zoo).read_text())
    assert card["kind"] == "mri-prior"
    assert card["prior"] == {"kind": "ambient", "acceleration": 4.0, "further_acceleration": 5.0}
    assert card["engines"]["model.onnx"]["parity_psnr_db_vs_torch"] >= 80
    check = card["metrics"]["denoising"]["held_out"]
    assert check["slices"] == 8 and np.isfinite(check["sigma=0.5"]["denoised_psnr"])
    assert "recon train ambient-prior" in card["training"]["command"] and "--acceleration 4" in card["training"][
        "command"]
    model, _ = load_model("tiny-ambient", zoo)
    assert type(model).__name__ == "EDMPrecond"
    assert verified_mri_prior_onnx("tiny-ambient", zoo).is_file()
    res = subprocess.run([sys.executable, "-m", "recon_service.cli", "zoo", "ship", str(tmp_path / "missing"), "--id",
                          "x"], capture_output=True, text=True)
    assert res.returncode != 0
