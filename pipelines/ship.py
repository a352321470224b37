"""Turn a finished training run into a shipped model: weights, measured metrics and a card."""

from __future__ import annotations

import csv
import json
import os
import platform
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch

from pipelines.evaluate import evaluate_held_out
from pipelines.zoo import ZOO_DIR, load_card, save_card, write_card


def training_command(run: Path, config: dict[str, Any]) -> str:
    """The ``recon train`` command that reproduces a run: every setting that differs from the defaults."""
    from dataclasses import asdict

    from pipelines.train import TrainConfig, default_model_config

    defaults = {**asdict(TrainConfig(model=config["model"])), "model_config": default_model_config(config["model"])}
    flags = {"steps", "seed", "threads", "data", "val_data", "init_from"}
    changed = {k: v for k, v in config.items()
               if k in defaults and k not in flags | {"model"} and json.dumps(v) != json.dumps(defaults[k])}
    command = f"recon train {config['model']} --out {run} --steps {config['steps']} --seed {config['seed']}"
    if config.get("threads"):
        command += f" --threads {config['threads']}"
    for flag in ("data", "val_data"):
        value = config.get(flag)
        if value != defaults[flag]:
            command += f" --{flag.replace('_', '-')} {' '.join(value) if isinstance(value, list) else value}"
    if config.get("init_from"):
        command += f" --init {config['init_from']}"
    if changed:
        command += f" --config '{json.dumps(changed)}'"
    return command


def _starting_point(init_from: str, zoo: Path) -> dict[str, Any]:
    """What a fine-tuned run started from: the weights' SHA-256 and how they were trained (the zoo card's
    training, or the run directory's when the weights file sits in one)."""
    from pipelines.zoo import sha256_of

    if Path(init_from).is_file():
        start: dict[str, Any] = {"weights": init_from, "sha256": sha256_of(init_from)}
        run = Path(init_from).parent
        if (run / "config.json").exists() and (run / "log.csv").exists():
            start["training"] = run_training(run, json.loads((run / "config.json").read_text()), zoo)
        return start
    card = load_card(init_from, zoo)
    return {"model_id": init_from, "sha256": card["sha256"], "training": card.get("training")}


def run_training(run: Path, config: dict[str, Any], zoo: Path = ZOO_DIR) -> dict[str, Any]:
    """The card's record of a run: recipe, command, time and, for a fine-tuned run, where it started
    (recursively) with the time of every stage added up in ``total_seconds``."""
    training: dict[str, Any] = {
        "recipe": {k: v for k, v in config.items() if k not in ("model", "model_config", "parameters")},
        "command": training_command(run, config),
        "seconds": _training_seconds(run),
    }
    if (run / "val.jsonl").exists():  # the validation scores the run was selected on
        training["validation"] = [json.loads(line) for line in (run / "val.jsonl").read_text().splitlines()
                                  if line.strip()]
    if config.get("init_from"):
        start = _starting_point(config["init_from"], zoo)
        earlier = start.get("training") or {}
        training["init_from"] = start
        before = earlier.get("total_seconds") or earlier.get("seconds") or 0.0
        training["total_seconds"] = training["seconds"] + before
    return training


def _training_seconds(run: Path) -> float:
    """Training time from log.csv; runs resumed by older versions restarted the clock, so segments add up."""
    with open(run / "log.csv") as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    total = 0.0
    for previous, current in zip(seconds, seconds[1:], strict=False):
        if current < previous:
            total += previous
    return total + (seconds[-1] if seconds else 0.0)


def evaluate_model(model_id: str, eval_root: Path, zoo: Path = ZOO_DIR,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """PSNR/SSIM/NMSE of a zoo model per held-out set and acceleration."""
    kind = load_card(model_id, zoo)["kind"]

    def report(name: str, acc: str, summary: dict[str, Any]) -> None:
        if progress:
            progress(f"{model_id} {name} {acc}: PSNR {summary['methods'][kind]['psnr']['mean']:.2f}")

    results = evaluate_held_out(eval_root, [kind], {kind: {"model_id": model_id}}, report)
    return {name: {acc: {**summary["methods"][kind], "volumes": summary["volumes"]}
                   for acc, summary in by_acc.items()} for name, by_acc in results.items()}


DEFAULT_DATA_NOTE = ("simulated brain training split (recon simulate mri --set train): ICBM152 template, "
                     "T1/T2/PD contrasts, axial training slabs only, 8 coils, 128x128, SNR 30 dB")


def ship_run(run: Path, model_id: str, eval_root: Path, zoo: Path = ZOO_DIR,
             progress: Callable[[str], None] | None = None, data_note: str = DEFAULT_DATA_NOTE) -> Path:
    """Copy ``run/model.pt`` into the zoo as ``model_id``, evaluate it and write its card."""
    config = json.loads((run / "config.json").read_text())
    training: dict[str, Any] = {  # read before write_card replaces a zoo model the run started from
        "data": data_note,
        **run_training(run, config, zoo),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {config.get('threads') or 'all'} training "
                   f"thread(s), torch {torch.__version__}",
        "date": date.today().isoformat(),
    }
    write_card(model_id, config["model"], config["model_config"], run / "model.pt", {"training": training}, zoo)
    card = load_card(model_id, zoo)
    card["metrics"] = evaluate_model(model_id, eval_root, zoo, progress)
    card["metrics_note"] = ("fastMRI definitions on magnitude images against the noise-free RSS reference; "
                            "mean/std over volumes; held-out slabs, orientations and contrast never trained on")
    return save_card(card, zoo)
