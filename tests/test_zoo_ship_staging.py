"""`recon zoo ship` stages weights, card (with metrics) and ONNX engines and replaces the shipped model only when
all of it succeeded. Real training on a tiny simulated set, real evaluation, real ONNX export, temporary zoos."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pipelines.data import InputError
from pipelines.evaluate import ACCELERATIONS, HELD_OUT_SETS, evaluate_held_out
from pipelines.ship import _replace_dir, evaluate_model, ship_run
from pipelines.simulate import mri
from pipelines.train import TrainConfig, train
from pipelines.zoo import ModelError, load_card, load_model

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {"num_steps": 2, "hidden_channels": 4, "num_layers": 1, "cell": "gru"}
MODEL = "tiny-rim"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Every benchmark set, two small files each (a 4x and an 8x file for the held-out sets)."""
    root = tmp_path_factory.mktemp("brain")
    cfg = mri.MRISimulationConfig(size=32, coils=2, slices=1)
    for name, (split, contrasts, orientations, accelerations) in mri.BENCHMARK_SETS.items():
        mri.write_set(root / name, mri.plan(split, contrasts[:1], orientations[:1], accelerations, cfg, 2), cfg)
    return root


def _train(data, out, seed):
    cfg = TrainConfig(model="rim", model_config=TINY, data=str(data / "train"), val_data=str(data / "val"), steps=2,
                      checkpoint_every=2, val_every=2, warmup_steps=1, lr=1e-3, seed=seed)
    train(cfg, out)
    return out


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return _train(data, root / "first", seed=0), _train(data, root / "second", seed=1)


@pytest.fixture(scope="module")
def shipped(runs, data, tmp_path_factory):
    """A zoo with the first run shipped into it (empty before)."""
    zoo = tmp_path_factory.mktemp("zoo")
    card_path = ship_run(runs[0], MODEL, data, zoo=zoo)
    assert card_path == zoo / MODEL / "card.json"
    return zoo


def snapshot(zoo):
    return {p.relative_to(zoo).as_posix(): p.read_bytes() for p in sorted(zoo.rglob("*")) if p.is_file()}


def test_a_ship_has_metrics_and_engines_and_loads(shipped, data, runs):
    card = load_card(MODEL, shipped)
    assert set(card["metrics"]) == set(HELD_OUT_SETS)
    for by_acc in card["metrics"].values():
        assert set(by_acc) == set(ACCELERATIONS)
        for entry in by_acc.values():
            assert entry["volumes"] == 1 and np.isfinite(entry["psnr"]["mean"]) and entry["seconds_per_slice"] > 0
    assert card["training"]["recipe"]["steps"] == 2
    assert set(card["engines"]) == {"model-matmul.onnx"} and card["engines"]["model-matmul.onnx"]["fft"] == "matmul"
    assert [p.name for p in shipped.iterdir()] == [MODEL]  # no staging directory left behind
    assert sorted(p.name for p in (shipped / MODEL).iterdir()) == ["card.json", "model-matmul.onnx", "model.pt"]

    # the service's way in: verified weights, and the verified ONNX engine giving the torch image
    from pipelines.engines import OnnxEngine, example_inputs, parity_psnr, verified_onnx_path

    model, loaded = load_model(MODEL, shipped)
    weights = torch.load(runs[0] / "model.pt", weights_only=True)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    engine = OnnxEngine(verified_onnx_path(MODEL, "matmul", loaded, shipped), ("CPUExecutionProvider",))
    inputs = example_inputs(coils=3, shape=(32, 28), seed=4)
    with torch.no_grad():
        assert parity_psnr(model(*inputs), engine(*inputs)) > 60


@pytest.mark.parametrize("failure", ["missing-set", "weights-do-not-fit", "nan-weights", "engine-fails"])
def test_a_failed_ship_leaves_the_zoo_byte_identical(shipped, data, runs, tmp_path, failure):
    before = snapshot(shipped)
    run, eval_root, kw = tmp_path / "run", data, {}
    shutil.copytree(runs[1], run)
    if failure == "missing-set":
        eval_root = tmp_path / "eval"
        for name in HELD_OUT_SETS[:-1]:
            shutil.copytree(data / name, eval_root / name)
        error, words = InputError, HELD_OUT_SETS[-1]
    elif failure == "weights-do-not-fit":
        config = json.loads((run / "config.json").read_text())
        config["model_config"] = {**TINY, "hidden_channels": 6}
        (run / "config.json").write_text(json.dumps(config))
        error, words = ModelError, "do not fit"
    elif failure == "nan-weights":
        state = torch.load(run / "model.pt", weights_only=True)
        next(v for v in state.values() if v.is_floating_point()).fill_(float("nan"))
        torch.save(state, run / "model.pt")
        error, words = ModelError, "NaN"
    else:  # the last step fails: weights, card and metrics are staged by then
        kw["ffts"] = ["matmul", "no-such-fft"]
        error, words = ModelError, "unknown FFT variant"
    with pytest.raises(error, match=words):
        ship_run(run, MODEL, eval_root, zoo=shipped, **kw)
    assert snapshot(shipped) == before
    assert [p.name for p in shipped.iterdir()] == [MODEL]


def test_a_second_ship_replaces_the_model_in_one_step(shipped, data, runs, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(shipped, zoo)
    old = load_card(MODEL, zoo)
    ship_run(runs[1], MODEL, data, zoo=zoo)
    new = load_card(MODEL, zoo)
    assert new["sha256"] != old["sha256"] and new["training"]["recipe"]["seed"] == 1
    assert new["engines"]["model-matmul.onnx"]["sha256"] != old["engines"]["model-matmul.onnx"]["sha256"]
    load_model(MODEL, zoo)
    assert [p.name for p in zoo.iterdir()] == [MODEL]


def test_replacing_without_an_atomic_exchange_keeps_the_old_directory_until_the_new_one_is_in(tmp_path, monkeypatch):
    import pipelines.ship as ship

    monkeypatch.setattr(ship, "_exchange", lambda a, b: False)  # a system without renameat2
    staged, target, previous = tmp_path / "staged", tmp_path / "target", tmp_path / "previous"
    for directory, text in ((staged, "new"), (target, "old")):
        directory.mkdir()
        (directory / "card.json").write_text(text)
    _replace_dir(staged, target, previous)
    assert (target / "card.json").read_text() == "new" and (previous / "card.json").read_text() == "old"

    # the second rename fails (here: nothing staged): the current model is put back
    with pytest.raises(FileNotFoundError):
        _replace_dir(tmp_path / "missing", target, tmp_path / "previous-2")
    assert not (tmp_path / "previous-2").exists()
    assert (target / "card.json").read_text() == "new"


def test_ship_evaluation_equals_evaluating_the_learned_method(data):
    """The metrics the ship computes (of the network alone) are the ones `recon evaluate --methods rim` gives for the
    same weights with the consistency step off."""
    direct = evaluate_model("rim-brain-sim", data)
    via_method = evaluate_held_out(data, ["rim"], {"rim": {"model_id": "rim-brain-sim", "consistency": "off"}})
    for name in HELD_OUT_SETS:
        for acc in ACCELERATIONS:
            expected = via_method[name][acc]["methods"]["rim"]
            for key in ("psnr", "ssim", "nmse"):
                assert direct[name][acc][key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9)
            assert direct[name][acc]["volumes"] == via_method[name][acc]["volumes"]
