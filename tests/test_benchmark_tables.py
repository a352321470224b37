"""benchmarks/mri_brain.py --cards: the table printed from the shipped zoo cards."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.unrolled import build_model
from pipelines.zoo import ModelError, load_card, write_card

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "mri_brain.py"
SHIPPED = ("rim-brain-sim", "recurrentvarnet-brain-sim")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)


def test_cards_table_has_one_row_per_model_set_and_acceleration_with_the_card_figures():
    done = _run("--cards", ",".join(SHIPPED))
    assert done.returncode == 0, done.stderr
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in done.stdout.splitlines()[2:]]
    expected = []
    for model_id in SHIPPED:
        card = load_card(model_id)
        for name, by_acc in card["metrics"].items():
            for acc, m in by_acc.items():
                expected.append((name, acc, card["kind"], f"{m['psnr']['mean']:.2f}", f"{m['ssim']['mean']:.4f}"))
    got = [(row[0].split(" (")[0], row[1], row[2], row[3].split(" ±")[0], row[4].split(" ±")[0]) for row in rows]
    assert sorted(got) == sorted(expected) and len(got) == 12


def test_unknown_model_id_is_a_usage_error_naming_it():
    done = _run("--cards", "no-such-model")
    assert done.returncode == 2
    assert "unknown model id 'no-such-model'" in done.stderr


def test_card_without_metrics_is_refused(tmp_path):
    spec = importlib.util.spec_from_file_location("mri_brain", SCRIPT)
    mri_brain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mri_brain)
    config = {"num_steps": 2, "hidden_channels": 4, "num_layers": 1, "cell": "gru"}
    weights = tmp_path / "w.pt"
    torch.save(build_model("rim", config).state_dict(), weights)
    write_card("tiny-rim", "rim", config, weights, {"training": {"note": "test"}}, zoo=tmp_path / "zoo")
    assert "metrics" not in json.loads((tmp_path / "zoo" / "tiny-rim" / "card.json").read_text())
    with pytest.raises(ModelError, match="tiny-rim: card has no metrics"):
        mri_brain.results_from_cards(["tiny-rim"], zoo=tmp_path / "zoo")
