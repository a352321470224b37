"""Every failure of the real `recon` command ends in one `recon: error: ...` line and exit code 2, no traceback:
bad arguments, unreadable --config, missing data directories, a diverging training run, a demo or a service
that cannot start. Each case runs the CLI in a subprocess, as a user would."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from models.unrolled import build_model
from pipelines.simulate import mri

TINY = {"num_steps": 2, "hidden_channels": 4, "num_layers": 1, "cell": "gru"}


def refused(proc, *words: str) -> str:
    """The command failed the way a user should see: exit 2, a last line `recon: error: ...` with ``words``."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("recon: error: "), proc.stderr
    for word in words:
        assert word in last, last
    return last


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("brain")
    cfg = mri.MRISimulationConfig(size=32, coils=2, slices=1)
    for name in ("train", "val"):
        split, contrasts, orientations, accelerations = mri.BENCHMARK_SETS[name]
        mri.write_set(root / name, mri.plan(split, contrasts[:1], orientations, accelerations[:1], cfg, 2), cfg)
    return root


def train_args(data, out, config: dict) -> list[str]:
    return ["train", "rim", "--data", str(data / "train"), "--val-data", str(data / "val"), "--out", str(out),
            "--steps", "4", "--config", json.dumps({"model_config": TINY, **config})]


@pytest.mark.parametrize("lr, loss", [(1e6, "the loss is "), (1e30, "the loss is nan")])
def test_a_diverging_training_run_stops_naming_the_step(run_recon, data, tmp_path, lr, loss):
    proc = run_recon(*train_args(data, tmp_path / "run", {"lr": lr, "checkpoint_every": 1}), check=False)
    last = refused(proc, "training diverged at step 2", loss, "lower the learning rate",
                   "the checkpoint of step 1 is kept")
    assert "nan" in last if lr == 1e30 else "nan" not in last
    assert not (tmp_path / "run" / "model.pt").exists()  # no weights from a diverged run


def test_unreadable_configs(run_recon, data, tmp_path):
    args = train_args(data, tmp_path / "run", {})[:-2]
    (tmp_path / "broken.json").write_text('{"lr": ')
    cases = [(str(tmp_path / "nope.json"), "no such file"), (str(tmp_path), "cannot read it"),
             (str(tmp_path / "broken.json"), "not valid JSON"), ("[1, 2]", "must be a JSON object, not list"),
             ('{"lr": "fast"}', "lr must be a finite number > 0, got 'fast'"),
             ('{"batch_size": 0}', "batch_size must be an integer >= 1"), ('{"speed": 3}', "unknown training settings")]
    for config, words in cases:
        refused(run_recon(*args, "--config", config, check=False), words)


def test_missing_data_directories(run_recon, data, tmp_path):
    missing = tmp_path / "missing"
    refused(run_recon("train", "rim", "--data", str(missing), "--out", str(tmp_path / "r"), check=False),
            str(missing), "training data directory not found")
    refused(run_recon("train", "rim", "--data", str(data / "train"), "--val-data", str(missing), "--out",
                      str(tmp_path / "r"), check=False), str(missing), "validation data directory not found")
    refused(run_recon("evaluate", str(missing), "--methods", "zero-filled", check=False), str(missing),
            "not a directory")


def test_zoo_ship_with_missing_evaluation_data_leaves_the_zoo_alone(run_recon, tmp_path):
    from pipelines.zoo import ZOO_DIR

    before = {p: p.read_bytes() for p in ZOO_DIR.rglob("*") if p.is_file()}
    run = tmp_path / "run"
    run.mkdir()
    torch.save(build_model("rim", TINY).state_dict(), run / "model.pt")
    (run / "config.json").write_text(json.dumps({"model": "rim", "model_config": TINY, "steps": 1, "seed": 0,
                                                 "data": "d", "val_data": None}))
    (run / "log.csv").write_text("step,loss,lr,acceleration,seconds\n1,0.5,1e-4,4.0,1.0\n")
    refused(run_recon("zoo", "ship", str(run), "--id", "rim-brain-sim", "--eval-data", str(tmp_path / "none"),
                      check=False), str(tmp_path / "none" / "test"), "not a directory")
    refused(run_recon("zoo", "ship", str(tmp_path / "no-run"), "--id", "x", check=False), "not a finished training run")
    assert {p: p.read_bytes() for p in ZOO_DIR.rglob("*") if p.is_file()} == before


def test_demo_that_cannot_start(run_recon, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    refused(run_recon("demo", "--out", str(a_file), check=False), str(a_file), "File exists")
    refused(run_recon("demo", "--out", str(a_file / "sub"), check=False), str(a_file / "sub"), "Not a directory")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        refused(run_recon("demo", "--out", str(tmp_path / "demo"), "--port", str(port), check=False),
                f"cannot listen on 127.0.0.1:{port}")
        refused(run_recon("serve", "--port", str(port), check=False), f"cannot listen on 127.0.0.1:{port}")
    assert not (tmp_path / "demo").exists()  # refused before any work


@pytest.mark.parametrize("args, words", [
    ([], ["the following arguments are required: command", "recon --help"]),
    (["bogus"], ["invalid choice: 'bogus'"]),
    (["train", "rim"], ["required: --out", "recon train --help"]),
    (["train", "rim", "--out", "x", "--steps", "-1"], ["argument --steps: must be at least 1, got -1"]),
    (["train", "rim", "--out", "x", "--steps", "many"], ["argument --steps: expected an integer, got 'many'"]),
    (["evaluate", ".", "--methods", "zero-filled", "--max-files", "0"], ["--max-files: must be at least 1"]),
    (["serve", "--port", "99999"], ["a TCP port is 0 to 65535"]),
    (["simulate", "mri", "--out", "x", "--acceleration", "0.5"], ["--acceleration must be >= 1"]),
    (["simulate", "ct", "--out", "x", "--views", "4", "--arc", "-5"], ["--arc must be more than 0"]),
    (["zoo", "ship", "x", "--id", "../up"], ["invalid model id '../up'"]),
    (["export", "nope"], ["unknown model id 'nope'"]),
])
def test_bad_arguments(run_recon, args, words):
    refused(run_recon(*args, check=False), *words)


def test_output_paths_that_cannot_be_written(run_recon, data, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    source = sorted((data / "val").glob("*.h5"))[0]
    refused(run_recon("reconstruct", str(source), "--method", "zero-filled", "--out", str(a_file / "out"),
                      check=False), str(a_file / "out"), "Not a directory")
    refused(run_recon("simulate", "ct", "--out", str(a_file), "--views", "4", "--size", "16", "--slices", "1",
                      check=False), str(a_file), "File exists")


def test_an_unexpected_failure_is_one_line_too():
    from recon_service.cli import describe_error

    assert describe_error(TypeError("bad operand")) == (
        "TypeError: bad operand (an unexpected failure; RECON_DEBUG=1 prints the traceback)")
    assert describe_error(IsADirectoryError(21, "Is a directory", "/tmp")) == "/tmp: Is a directory"
    assert describe_error(ValueError("lr must be > 0")) == "lr must be > 0"
