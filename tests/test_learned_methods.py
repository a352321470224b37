"""The shipped networks, run through the registry as a user runs them."""

import pytest
import torch

from pipelines.metrics import psnr, ssim
from pipelines.pipeline import reconstruct
from pipelines.reconstructors import default_models
from pipelines.simulate import mri
from pipelines.zoo import load_card

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def held_out_slab():
    cfg = mri.MRISimulationConfig(size=128, coils=8, slices=2)
    start = mri.slab_starts("axial", "test", cfg)[1]
    return mri.simulate_slab("t2", "axial", start, 4.0, cfg, seed=11)


@pytest.mark.parametrize("method", ["rim", "recurrentvarnet"])
def test_shipped_model_beats_the_classical_baselines_on_held_out_data(method, held_out_slab):
    torch.manual_seed(0)
    learned = reconstruct(held_out_slab, method)
    sense = reconstruct(held_out_slab, "cg-sense")
    assert learned.volume.data.shape == (2, 128, 128)
    assert learned.volume.attrs["model_id"] == default_models()[method]
    assert learned.volume.attrs["weights_sha256"] == load_card(default_models()[method])["sha256"]
    assert learned.metrics["psnr"] > sense.metrics["psnr"] + 2
    assert learned.metrics["ssim"] > sense.metrics["ssim"]


def test_model_id_must_match_the_method(held_out_slab):
    with pytest.raises(ValueError, match="is a rim, not a recurrentvarnet"):
        reconstruct(held_out_slab, "recurrentvarnet", {"model_id": default_models()["rim"]})
    with pytest.raises(ValueError, match="unknown model id"):
        reconstruct(held_out_slab, "rim", {"model_id": "no-such-model"})
    with pytest.raises(ValueError, match="parameter 'engine' is 'tensorflow'; allowed: one of torch, onnx"):
        reconstruct(held_out_slab, "rim", {"engine": "tensorflow"})


def test_metrics_agree_with_a_direct_computation(held_out_slab):
    result = reconstruct(held_out_slab, "rim")
    magnitude = result.volume.magnitude()
    assert result.metrics["psnr"] == pytest.approx(psnr(held_out_slab.reference, magnitude))
    assert result.metrics["ssim"] == pytest.approx(ssim(held_out_slab.reference, magnitude))


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
    proc = run_recon("reconstruct", str(file), "--method", "rim", "--model-id", "nope", "--out", str(tmp_path),
                     check=False)
    assert proc.returncode == 2 and "unknown model id 'nope'" in proc.stderr
