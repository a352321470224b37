"""Every parameter of every method, walked over HTTP and over the CLI with wrong types, out-of-range values,
unknown choices and unknown keys: both refuse at submission with the same words (a 422 naming the parameter,
``recon: error:`` and exit code 2), never a 202 that fails later and never a 5xx."""

import json

import pytest
from api_server import run_server, write_fastmri_file, write_sinogram_file
from method_params import cases

from pipelines.reconstructors import ParamError
from recon_service.cli import main as recon_main

CASES = cases()
IDS = [label for _, _, label in CASES]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("params-inputs")
    return {"mri": write_fastmri_file(tmp / "brain.h5"), "ct": write_sinogram_file(tmp / "chest.h5")}


@pytest.fixture(scope="module")
def submitter(tmp_path_factory):
    with run_server(tmp_path_factory.mktemp("params-api"), warmup="false") as server, \
            server.client("submit-token") as client:
        yield client


def _refusal(method, params) -> str:
    with pytest.raises(ParamError) as err:
        method.check(params)
    return str(err.value)


@pytest.mark.parametrize(("method", "params", "label"), CASES, ids=IDS)
def test_http_refuses_at_submission(submitter, inputs, method, params, label):
    pipeline = f"{method.modality}-{method.name}"
    source = inputs[method.modality]
    response = submitter.post("/v1/jobs", data={"pipeline": pipeline, "params": json.dumps(params)},
                              files=[("file", (source.name, source.read_bytes()))])
    assert response.status_code == 422, (label, response.status_code, response.text[:300])
    assert response.json()["detail"] == f"pipeline {pipeline!r}: {_refusal(method, params)}"


@pytest.mark.parametrize(("method", "params", "label"), CASES, ids=IDS)
def test_cli_refuses_with_the_same_words(inputs, tmp_path, capsys, method, params, label):
    (name, value), = params.items()
    code = recon_main(["reconstruct", str(inputs[method.modality]), "--method", method.name, "--out",
                       str(tmp_path), "--param", f"{name}={json.dumps(value)}"])
    assert code == 2, label
    assert capsys.readouterr().err == f"recon: error: {_refusal(method, params)}\n"
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_installed_command_refuses_too(run_recon, inputs, tmp_path):
    proc = run_recon("reconstruct", str(inputs["ct"]), "--method", "sirt", "--out", str(tmp_path),
                     "--param", "iterations=10000000", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(
        "recon: error: parameter 'iterations' is 10000000; allowed: an integer from 1 to 5000")
    proc = run_recon("reconstruct", str(inputs["ct"]), "--method", "fbp", "--out", str(tmp_path),
                     "--param", "device=cpu")
    assert "nifti:" in proc.stdout


def test_an_engine_the_model_does_not_ship_is_refused_at_the_door(submitter, inputs, tmp_path, capsys):
    # the service runs learned methods on ONNX Runtime, so the door checks the parameters as the worker runs them
    expected = "parameter 'fft' is 'dft-op': model 'rim-brain-sim' ships no dft-op ONNX engine (it ships: matmul)"
    source = inputs["mri"]
    response = submitter.post("/v1/jobs", data={"pipeline": "mri-rim", "params": json.dumps({"fft": "dft-op"})},
                              files=[("file", (source.name, source.read_bytes()))])
    assert response.status_code == 422 and response.json()["detail"] == f"pipeline 'mri-rim': {expected}"
    code = recon_main(["reconstruct", str(source), "--method", "rim", "--out", str(tmp_path), "--param", "engine=onnx",
                       "--param", "fft=dft-op"])
    assert code == 2 and capsys.readouterr().err == f"recon: error: {expected}\n"
