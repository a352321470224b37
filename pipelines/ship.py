"""Turn a finished training run into a shipped model: weights, measured metrics, ONNX engines and a card.

Everything is prepared in a staging directory inside the zoo (``<zoo>/.ship-<id>-*/<id>/``): the weights are
copied and checked against the run's configuration, the network is evaluated on the held-out sets, the ONNX
engines are exported and checked against torch, and the card lists the metrics and the engines. Only when all
of that succeeded does the staged directory replace ``<zoo>/<id>/`` (one atomic rename exchange on Linux;
elsewhere two renames with the previous directory kept until the new one is in place). A ship that fails at
any step leaves the zoo as it was.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.data import InputError, MRIAcquisition
from pipelines.evaluate import ACCELERATIONS, HELD_OUT_SETS, METRICS, dataset_files, summarize
from pipelines.io.durable import fsync_path
from pipelines.zoo import ZOO_DIR, ModelError, load_card, load_model, model_dir, save_card, write_card


def train_command(name: str, run: Path, config: dict[str, Any], defaults: dict[str, Any], options: dict[str, str],
                  always: Collection[str] = (), skip: Collection[str] = ()) -> str:
    """The ``recon train NAME`` command that reproduces a run. ``options`` maps settings to their command-line
    options (in order), given where they differ from ``defaults`` (``always``: whatever their value); every other
    changed setting goes into ``--config``; ``skip`` holds settings the command's name already says."""
    def changed(key: str) -> bool:
        return key in config and json.dumps(config[key]) != json.dumps(defaults.get(key))

    def text(value: Any) -> str:
        if isinstance(value, list):
            return " ".join(str(v) for v in value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    command = f"recon train {name} --out {run} --steps {config['steps']} --seed {config['seed']}"
    if config.get("threads"):
        command += f" --threads {config['threads']}"
    given = [k for k in options if k not in skip and config.get(k) is not None and (k in always or changed(k))]
    command += "".join(f" {options[k]} {text(config[k])}" for k in given)
    rest = {k: config[k] for k in defaults
            if k not in {"steps", "seed", "threads", *skip, *given} and changed(k)}
    if rest:
        command += f" --config '{json.dumps(rest)}'"
    return command


def training_command(run: Path, config: dict[str, Any]) -> str:
    """The ``recon train`` command that reproduces a RecurrentVarNet or RIM run."""
    from dataclasses import asdict

    from pipelines.train import TrainConfig, default_model_config

    defaults = {**asdict(TrainConfig(model=config["model"])), "model_config": default_model_config(config["model"])}
    return train_command(config["model"], run, config, defaults,
                         {"data": "--data", "val_data": "--val-data", "init_from": "--init"}, skip={"model"})


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


Progress = Callable[[str], None]

DEFAULT_ENGINE_FFTS = ("matmul",)  # the FFT variant the service's ONNX engines use by default
MIN_ENGINE_PARITY_DB = 60.0  # ONNX Runtime against torch; shipped engines reach 140 dB
METRICS_NOTE = ("fastMRI definitions on magnitude images against the noise-free RSS reference; mean/std over "
                "volumes; held-out slabs, orientations and contrast never trained on")


def held_out_files(eval_root: Path) -> dict[str, dict[str, list[Path]]]:
    """``{set: {acceleration: files}}`` of the held-out sets under ``eval_root``; an ``InputError`` names the
    first set or acceleration that is missing, before anything is evaluated."""
    return {name: {acc: dataset_files(Path(eval_root) / name, f"*_{acc}*") for acc in ACCELERATIONS}
            for name in HELD_OUT_SETS}


def evaluate_network(network: torch.nn.Module, eval_root: Path, label: str = "model",
                     progress: Progress | None = None) -> dict[str, Any]:
    """PSNR/SSIM/NMSE (mean/std over volumes), seconds per slice and volume count of a network per held-out set
    and acceleration; the same computation as evaluating the learned method (torch engine) on those files."""
    from pipelines.learned import reconstruct_acquisition
    from pipelines.metrics import evaluate_volume
    from pipelines.pipeline import load
    from pipelines.sampling import acquisition_mask

    results: dict[str, dict[str, Any]] = {}
    for name, by_acc in held_out_files(eval_root).items():
        for acc, files in by_acc.items():
            rows: dict[str, list[float]] = {"psnr": [], "ssim": [], "nmse": [], "seconds": [], "slices": []}
            for path in files:
                acq = load(path)
                if not isinstance(acq, MRIAcquisition) or acq.reference is None:
                    raise InputError(path, "is not an MRI acquisition with a reference image to evaluate against")
                mask, num_low = acquisition_mask(acq)
                start = time.perf_counter()
                data = reconstruct_acquisition(network, acq, mask, num_low)
                rows["seconds"].append(time.perf_counter() - start)
                rows["slices"].append(data.shape[0])
                for key, value in evaluate_volume(acq.reference, np.abs(data).astype(np.float32)).items():
                    rows[key].append(value)
            summary = summarize(rows)
            if not all(math.isfinite(summary[key]["mean"]) for key in METRICS):
                raise ModelError(f"{label}: the metrics on {name} {acc} are not finite; the weights are broken")
            results.setdefault(name, {})[acc] = {**summary, "volumes": len(files)}
            if progress:
                progress(f"{label} {name} {acc}: PSNR {summary['psnr']['mean']:.2f}")
    return results


def evaluate_model(model_id: str, eval_root: Path, zoo: Path = ZOO_DIR,
                   progress: Progress | None = None) -> dict[str, Any]:
    """PSNR/SSIM/NMSE of a zoo model per held-out set and acceleration."""
    network, _ = load_model(model_id, zoo)
    return evaluate_network(network, eval_root, model_id, progress)


DEFAULT_DATA_NOTE = ("simulated brain training split (recon simulate mri --set train): ICBM152 template, "
                     "T1/T2/PD contrasts, axial training slabs only, 8 coils, 128x128, SNR 30 dB")


def shipped_ffts(model_id: str, zoo: Path = ZOO_DIR) -> tuple[str, ...]:
    """The FFT variants of the engines a ship of ``model_id`` makes: the default ones and every variant the
    model in the zoo ships now."""
    ffts = list(DEFAULT_ENGINE_FFTS)
    with contextlib.suppress(ModelError):
        ffts += [e["fft"] for e in load_card(model_id, zoo).get("engines", {}).values() if e.get("fft") not in ffts]
    return tuple(ffts)


def ship_run(run: Path, model_id: str, eval_root: Path, zoo: Path = ZOO_DIR, progress: Progress | None = None,
             data_note: str = DEFAULT_DATA_NOTE, ffts: Sequence[str] | None = None) -> Path:
    """Stage ``run/model.pt`` as ``model_id`` with its card, metrics and ONNX engines (``ffts``, default
    :func:`shipped_ffts`), then put it into the zoo in one step. Returns the card's path in the zoo.

    Raises ``InputError``/``ModelError``/``FileNotFoundError`` (the zoo unchanged) when the run is incomplete,
    its weights do not fit its configuration or are not finite, the evaluation data lacks a set, or an engine
    does not match torch."""
    from pipelines.engines import export_zoo_model, verified_onnx_path

    run, zoo = Path(run), Path(zoo)
    target = model_dir(model_id, zoo)
    for name in ("config.json", "log.csv", "model.pt"):
        if not (run / name).is_file():
            raise InputError(run, f"not a finished training run: {name} is missing")
    held_out_files(eval_root)  # fail before any work when a set is missing
    ffts = tuple(ffts) if ffts else shipped_ffts(model_id, zoo)
    config = json.loads((run / "config.json").read_text())
    training: dict[str, Any] = {
        "data": data_note,
        **run_training(run, config, zoo),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {config.get('threads') or 'all'} training "
                   f"thread(s), torch {torch.__version__}",
        "date": date.today().isoformat(),
    }
    with staged_model(model_id, config["model"], config["model_config"], run / "model.pt", {"training": training},
                      zoo) as (staging, network, card):
        card["metrics"] = evaluate_network(network, eval_root, model_id, progress)
        card["metrics_note"] = METRICS_NOTE
        save_card(card, staging)
        for fft in ffts:
            if progress:
                progress(f"{model_id}: exporting the ONNX engine with the {fft} FFT")
            path, psnr_db = export_zoo_model(model_id, fft, zoo=staging)
            require_parity(path.name, psnr_db, MIN_ENGINE_PARITY_DB)
        card = load_card(model_id, staging)  # the staged model as the service will load it
        for fft in ffts:
            verified_onnx_path(model_id, fft, card, staging)
    return target / "card.json"


@contextlib.contextmanager
def staged_model(model_id: str, kind: str, model_config: dict[str, Any], weights: Path, extra: dict[str, Any],
                 zoo: Path) -> Iterator[tuple[Path, torch.nn.Module, dict[str, Any]]]:
    """``model_id`` staged in a directory inside ``zoo`` (the target's file system): weights and card written,
    loaded (so the weights fit the configuration) and checked finite. Yields ``(staging zoo, network, card)`` for
    the caller to add metrics and engines to; when the block ends without an error, the staged model is loaded once
    more and replaces ``<zoo>/<id>/`` in one step. The staging directory is removed in every case."""
    zoo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".ship-{model_id}-", dir=zoo))
    try:
        write_card(model_id, kind, model_config, weights, extra, staging)
        network, card = load_model(model_id, staging)
        if not all(torch.isfinite(p).all() for p in network.state_dict().values() if p.is_floating_point()):
            raise ModelError(f"{weights}: the weights hold NaN or infinite values")
        yield staging, network, card
        load_model(model_id, staging)
        staged = model_dir(model_id, staging)
        _fsync_tree(staged)
        _replace_dir(staged, model_dir(model_id, zoo), staging / "previous")
        fsync_path(zoo)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def require_parity(engine: str, psnr_db: float, minimum: float) -> None:
    """``ModelError`` unless the ONNX engine ``engine`` matches torch to ``minimum`` dB PSNR."""
    if not psnr_db >= minimum:
        raise ModelError(f"{engine}: ONNX Runtime differs from torch ({psnr_db:.1f} dB PSNR, needs {minimum:g} dB)")


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    fsync_path(directory)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")


def _replace_dir(staged: Path, target: Path, previous: Path) -> None:
    """Put ``staged`` at ``target``. An existing ``target`` is swapped out in one step where the system can,
    else moved to ``previous`` first and moved back if the second rename fails; ``previous`` (or ``staged``
    after a swap) holds the old directory for the caller to delete."""
    if not target.exists():
        os.rename(staged, target)
        return
    if _exchange(staged, target):
        return
    os.rename(target, previous)
    try:
        os.rename(staged, target)
    except OSError:
        os.rename(previous, target)
        raise
