import json

import pytest
import torch

from models.unrolled import build_model
from pipelines.zoo import ModelError, load_card, load_model, write_card

TINY = {"num_steps": 2, "hidden_channels": 4, "num_layers": 1, "cell": "gru"}


def _ship(tmp_path, kind="rim", config=TINY):
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    torch.save(build_model(kind, config).state_dict(), weights)
    return write_card("tiny-rim", kind, config, weights, {"training": {"note": "test"}}, zoo=tmp_path / "zoo")


def test_card_roundtrip_and_verified_load(tmp_path):
    card_path = _ship(tmp_path)
    card = json.loads(card_path.read_text())
    assert card["id"] == "tiny-rim" and len(card["sha256"]) == 64 and card["parameters"] > 0
    model, loaded = load_model("tiny-rim", zoo=tmp_path / "zoo")
    assert loaded == card and not model.training
    reference = build_model("rim", TINY)
    reference.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_corrupt_weights_are_refused(tmp_path):
    card_path = _ship(tmp_path)
    weights = card_path.parent / "model.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_model("tiny-rim", zoo=tmp_path / "zoo")


def test_weights_of_another_shape_are_refused(tmp_path):
    card_path = _ship(tmp_path)
    card = json.loads(card_path.read_text())
    card["config"] = {**TINY, "hidden_channels": 6}  # the card now promises another architecture
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not fit"):
        load_model("tiny-rim", zoo=tmp_path / "zoo")


def test_unknown_and_unsafe_ids(tmp_path):
    _ship(tmp_path)
    with pytest.raises(ModelError, match="unknown model id 'nope'.*tiny-rim"):
        load_card("nope", zoo=tmp_path / "zoo")
    with pytest.raises(ModelError, match="invalid model id"):
        load_card("../etc", zoo=tmp_path / "zoo")


def test_card_of_a_fine_tuned_run_records_where_it_started(tmp_path):
    from pipelines.ship import _starting_point, training_command

    card = json.loads(_ship(tmp_path).read_text())
    config = {"model": "rim", "model_config": {"num_steps": 8, "hidden_channels": 48, "num_layers": 2, "cell": "gru"},
              "steps": 300, "seed": 1, "threads": 2, "data": "data/brain-bench/train",
              "val_data": "data/brain-bench/val", "lr": 1e-4, "init_from": "tiny-rim"}
    command = training_command(tmp_path / "run", config)
    assert command == (f"recon train rim --out {tmp_path / 'run'} --steps 300 --seed 1 --threads 2 "
                       "--init tiny-rim --config '{\"lr\": 0.0001}'")
    start = _starting_point("tiny-rim", tmp_path / "zoo")
    assert start == {"model_id": "tiny-rim", "sha256": card["sha256"], "training": {"note": "test"}}
    by_file = _starting_point(str(tmp_path / "w.pt"), tmp_path / "zoo")
    assert by_file == {"weights": str(tmp_path / "w.pt"), "sha256": card["sha256"]}


def test_card_follows_a_chain_of_fine_tuning_runs(tmp_path):
    from pipelines.ship import run_training

    card = json.loads(_ship(tmp_path).read_text())
    base = {"model": "rim", "model_config": TINY, "steps": 2, "seed": 0, "threads": 1, "data": "d",
            "val_data": None}
    first, second = tmp_path / "first", tmp_path / "second"
    for run, init, seconds in ((first, "tiny-rim", 30.0), (second, str(first / "model.pt"), 12.5)):
        run.mkdir()
        (run / "config.json").write_text(json.dumps({**base, "init_from": init}))
        rows = f"step,loss,lr,acceleration,seconds\n1,0.5,1e-4,4.0,1.0\n2,0.4,1e-4,4.0,{seconds}\n"
        (run / "log.csv").write_text(rows)
        torch.save(build_model("rim", TINY).state_dict(), run / "model.pt")
    scores = [{"step": 1, "psnr": 30.5, "ssim": 0.9}, {"step": 2, "psnr": 31.0, "ssim": 0.91}]
    (second / "val.jsonl").write_text("".join(json.dumps(v) + "\n" for v in scores))
    training = run_training(second, json.loads((second / "config.json").read_text()), tmp_path / "zoo")
    assert training["seconds"] == 12.5 and training["total_seconds"] == 42.5
    assert [v["psnr"] for v in training["validation"]] == [30.5, 31.0]  # the scores the run was selected on
    assert "validation" not in training["init_from"]["training"]  # the first run had no validation log
    assert f"--init {first / 'model.pt'}" in training["command"]
    stage = training["init_from"]
    assert stage["weights"] == str(first / "model.pt") and len(stage["sha256"]) == 64
    assert stage["training"]["init_from"] == {"model_id": "tiny-rim", "sha256": card["sha256"],
                                              "training": {"note": "test"}}


def test_every_shipped_model_loads_verified_with_its_engines_and_the_networks_flag_thresholds():
    """Each card in models/zoo: its weights match the checksum and the configuration, each ONNX engine listed
    matches its checksum, and every unrolled network carries calibrated out-of-distribution thresholds."""
    from pipelines.confidence import thresholds_of
    from pipelines.engines import verified_onnx_path
    from pipelines.ship_prior import verified_prior_onnx
    from pipelines.zoo import list_models

    cards = list_models()
    kinds = {card["kind"] for card in cards}
    assert {"recurrentvarnet", "rim", "ct-prior", "mri-prior"} <= kinds
    for card in cards:
        load_model(card["id"])
        assert card.get("engines"), card["id"]
        if card["kind"] in ("recurrentvarnet", "rim"):
            for engine in card["engines"].values():
                verified_onnx_path(card["id"], engine["fft"], card)
            limits = thresholds_of(card)
            assert limits is not None and limits.residual > 1, card["id"]
            assert card["ood"]["false_flag_rate"]["held-out pooled"] < 0.05, card["id"]
        else:
            verified_prior_onnx(card["id"])
