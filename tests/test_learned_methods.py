"""The shipped networks, run through the registry as a user runs them."""

import numpy as np
import pytest
import torch

from pipelines.metrics import psnr, ssim
from pipelines.pipeline import reconstruct
from pipelines.reconstructors import default_models
from pipelines.simulate import brain, mri
from pipelines.zoo import load_card

pytestmark = pytest.mark.usefixtures("single_thread")

# The shipped models trained on `recon simulate mri --set train` (and its intensity-augmented copy): axial slabs of
# the default geometry (4 slices 2 mm apart, 4 mm gaps) dealt train, train, val, train, test. Held-out slabs for
# these tests: the middle two slices of each test slab, 7 mm from the nearest training slice (asserted below).
TRAINED = mri.MRISimulationConfig()
HELD_OUT = mri.MRISimulationConfig(size=128, coils=8, slices=2)
MIN_DISTANCE_MM = 6.0
# case: (test slab, contrast, acceleration, seed)
CASES = {"t2-4x": (0, "t2", 4.0, 11), "t1-8x": (1, "t1", 8.0, 12)}
# measured PSNR dB / SSIM on each case (seeded, deterministic; CG-SENSE at its noise-adaptive defaults; the networks
# with their default consistency step, which gains 0.0-0.4 dB PSNR and costs 0.016-0.031 SSIM here against
# consistency=off: 32.94/0.959, 33.66/0.962, 25.71/0.888, 26.28/0.900): the bars are these minus 0.7 dB and 0.02; a
# network must lead CG-SENSE and zero-filled by its measured lead minus 1 dB
MEASURED = {
    ("t2-4x", "zero-filled"): (21.83, 0.315), ("t2-4x", "cg-sense"): (26.71, 0.750),
    ("t2-4x", "rim"): (33.34, 0.935), ("t2-4x", "recurrentvarnet"): (33.97, 0.931),
    ("t1-8x", "zero-filled"): (20.79, 0.201), ("t1-8x", "cg-sense"): (22.80, 0.766),
    ("t1-8x", "rim"): (25.71, 0.872), ("t1-8x", "recurrentvarnet"): (26.30, 0.872),
}


def _plane_positions_mm(orientation: str, first_index: int, cfg: mri.MRISimulationConfig) -> np.ndarray:
    """Where each slice plane of a slab lies along the slab's normal, in scanner mm (from its affine)."""
    affine = brain.slab_affine(orientation, first_index, cfg.slice_step, cfg.size)
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    return np.array([(affine @ [0.0, 0.0, k, 1.0])[:3] @ normal for k in range(cfg.slices)])


def _training_planes_mm() -> np.ndarray:
    return np.concatenate([_plane_positions_mm("axial", start, TRAINED)
                           for start in mri.slab_starts("axial", "train", TRAINED)])


def _held_out_start(test_slab: int) -> int:
    return mri.slab_starts("axial", "test", TRAINED)[test_slab] + TRAINED.slice_step


def _simulate(case: str):
    test_slab, contrast, acceleration, seed = CASES[case]
    return mri.simulate_slab(contrast, "axial", _held_out_start(test_slab), acceleration, HELD_OUT, seed=seed)


@pytest.fixture(scope="module")
def held_out_slabs():
    return {case: _simulate(case) for case in CASES}


@pytest.fixture(scope="module")
def held_out_slab(held_out_slabs):
    return held_out_slabs["t2-4x"]


@pytest.mark.parametrize("case", list(CASES))
def test_held_out_slabs_are_millimetres_from_every_training_slice(case):
    training = _training_planes_mm()
    assert len(training) == len(mri.slab_starts("axial", "train", TRAINED)) * TRAINED.slices > 0
    test_slab = CASES[case][0]
    planes = _plane_positions_mm("axial", _held_out_start(test_slab), HELD_OUT)
    distance = np.abs(planes[:, None] - training[None, :]).min()
    assert distance >= MIN_DISTANCE_MM, (case, planes, distance)
    # and it is a slab of the test split, the one no training or model selection saw
    assert _held_out_start(test_slab) - TRAINED.slice_step in mri.slab_starts("axial", "test", TRAINED)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", ["rim", "recurrentvarnet"])
def test_shipped_model_beats_the_classical_baselines_on_held_out_data(method, case, held_out_slabs):
    slab = held_out_slabs[case]
    torch.manual_seed(0)
    learned = reconstruct(slab, method)
    baselines = {name: reconstruct(slab, name).metrics for name in ("cg-sense", "zero-filled")}
    assert learned.volume.data.shape == (2, 128, 128)
    assert learned.volume.attrs["model_id"] == default_models()[method]
    assert learned.volume.attrs["weights_sha256"] == load_card(default_models()[method])["sha256"]
    psnr_measured, ssim_measured = MEASURED[(case, method)]
    got = learned.metrics
    assert got["psnr"] > psnr_measured - 0.7 and got["ssim"] > ssim_measured - 0.02, (case, method, got)
    for name, metrics in baselines.items():
        lead = psnr_measured - MEASURED[(case, name)][0]
        assert got["psnr"] > metrics["psnr"] + lead - 1.0, (case, method, name, got, metrics)
        assert got["ssim"] > metrics["ssim"] + 0.1, (case, method, name, got, metrics)


def test_model_id_must_match_the_method(held_out_slab):
    with pytest.raises(ValueError, match="is a rim, not a recurrentvarnet"):
        reconstruct(held_out_slab, "recurrentvarnet", {"model_id": default_models()["rim"]})
    with pytest.raises(ValueError, match="unknown model id"):
        reconstruct(held_out_slab, "rim", {"model_id": "no-such-model"})
    with pytest.raises(ValueError, match="parameter 'engine' is 'tensorflow'; allowed: one of torch, onnx"):
        reconstruct(held_out_slab, "rim", {"engine": "tensorflow"})


def test_metrics_agree_with_a_direct_computation_and_progress_covers_the_report(held_out_slab):
    seen = []
    result = reconstruct(held_out_slab, "rim", None, lambda done, total: seen.append((done, total)))
    magnitude = result.volume.magnitude()
    assert result.metrics["psnr"] == pytest.approx(psnr(held_out_slab.reference, magnitude))
    assert result.metrics["ssim"] == pytest.approx(ssim(held_out_slab.reference, magnitude))
    # 2 slices through the network, then the consistency report's L1-wavelet baseline on the same 2
    assert seen[0] == (1, 4) and (2, 4) in seen and seen[-1] == (4, 4), seen
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert result.volume.attrs["consistency_report"]["disagreement"] > 0


def test_shipped_onnx_engine_matches_torch(held_out_slab):
    from pipelines.engines import onnx_path

    model_id = default_models()["recurrentvarnet"]
    assert onnx_path(model_id, "matmul").exists(), "the shipped ONNX engine is part of the zoo"
    eager = reconstruct(held_out_slab, "recurrentvarnet")
    onnx = reconstruct(held_out_slab, "recurrentvarnet", {"engine": "onnx", "fft": "matmul",
                                                          "providers": ["CPUExecutionProvider"]})
    assert onnx.volume.attrs["engine"] == "onnxruntime:CPUExecutionProvider"
    assert psnr(eager.volume.magnitude(), onnx.volume.magnitude()) > 50


def test_cli_reconstructs_with_a_chosen_model(tmp_path, run_recon):
    run_recon("simulate", "mri", "--out", str(tmp_path / "d"), "--slices", "1", "--size", "96", "--max-files", "1")
    file = next((tmp_path / "d").glob("*.h5"))
    proc = run_recon("reconstruct", str(file), "--method", "rim", "--model-id", default_models()["rim"],
                     "--out", str(tmp_path / "r"))
    assert "PSNR" in proc.stdout and any((tmp_path / "r").glob("*_rim.nii.gz"))
    assert "consistency: Consistency report: data residual" in proc.stdout
    proc = run_recon("reconstruct", str(file), "--method", "rim", "--model-id", "nope", "--out", str(tmp_path),
                     check=False)
    assert proc.returncode == 2 and "unknown model id 'nope'" in proc.stderr
