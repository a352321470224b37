import numpy as np
import torch

from models.unrolled import build_model
from pipelines.engines import OnnxEngine, export_zoo_model, parity_psnr
from pipelines.learned import reconstruct_acquisition
from pipelines.sampling import acquisition_mask
from pipelines.simulate import mri
from pipelines.zoo import load_model, write_card

TINY = {"num_steps": 2, "hidden_channels": 4, "num_layers": 2, "learned_initializer": True,
        "initializer_channels": [4, 4, 8, 8], "initializer_dilations": [1, 1, 2, 4], "multiscale": 2}


def test_exported_zoo_model_matches_torch_on_a_real_acquisition(tmp_path):
    torch.manual_seed(0)
    zoo = tmp_path / "zoo"
    weights = tmp_path / "w.pt"
    torch.save(build_model("recurrentvarnet", TINY).state_dict(), weights)
    write_card("tiny-rvn", "recurrentvarnet", TINY, weights, {}, zoo=zoo)

    path, psnr_db = export_zoo_model("tiny-rvn", "matmul", zoo=zoo)
    assert path.exists() and path.parent == zoo / "tiny-rvn"
    assert psnr_db > 50

    cfg = mri.MRISimulationConfig(size=48, coils=3, slices=2)
    start = mri.slab_starts("axial", "test", cfg)[0]
    acq = mri.simulate_slab("t2", "axial", start, 4.0, cfg, seed=1)
    mask, num_low = acquisition_mask(acq)
    model, _ = load_model("tiny-rvn", zoo=zoo)
    eager = reconstruct_acquisition(model, acq, mask, num_low)
    engine = OnnxEngine(path, ("CPUExecutionProvider",))
    assert engine.provider == "CPUExecutionProvider"
    onnx = reconstruct_acquisition(engine, acq, mask, num_low)
    assert onnx.shape == eager.shape == (2, 48, 48)
    assert parity_psnr(torch.from_numpy(np.abs(eager)), torch.from_numpy(np.abs(onnx))) > 50


def test_engine_file_must_match_its_card(tmp_path):
    import pytest

    from pipelines.engines import verified_onnx_path
    from pipelines.zoo import ModelError, load_card

    zoo = tmp_path / "zoo"
    weights = tmp_path / "w.pt"
    torch.save(build_model("recurrentvarnet", TINY).state_dict(), weights)
    write_card("tiny", "recurrentvarnet", TINY, weights, {}, zoo=zoo)
    with pytest.raises(ModelError, match="recon export tiny"):
        verified_onnx_path("tiny", "matmul", load_card("tiny", zoo), zoo)
    path, _ = export_zoo_model("tiny", "matmul", zoo=zoo)
    card = load_card("tiny", zoo)
    assert card["engines"][path.name]["fft"] == "matmul"
    assert verified_onnx_path("tiny", "matmul", card, zoo) == path
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="checksum mismatch"):
        verified_onnx_path("tiny", "matmul", card, zoo)
