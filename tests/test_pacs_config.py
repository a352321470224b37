"""The PACS configuration file: what it accepts, and the refusals naming the file and the key."""

import json

import pytest

from recon_service.pacs.config import DicomWebDestination, PacsConfigError, load_pacs_config

GOOD = {"destinations": {
    "archive": {"kind": "dicomweb", "url": "http://127.0.0.1:8042/dicom-web", "username": "u",
                "password_env": "TEST_PACS_PASSWORD"},
    "modality": {"kind": "dimse", "host": "127.0.0.1", "port": 4242, "called_ae": "ARCHIVE"}},
    "auto_deliver": {"*": ["archive"], "ct-fbp": ["archive", "modality"]},
    "study_lookup": "modality"}


def write(tmp_path, value) -> str:
    path = tmp_path / "pacs.json"
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def test_rules_and_review(tmp_path, monkeypatch):
    config = load_pacs_config(write(tmp_path, GOOD))
    assert config.auto_destinations("ct-fbp") == ["archive", "modality"]
    assert config.auto_destinations("mri-cg-sense") == ["archive"]
    assert config.needs_review("mri-rim", learned=True) and not config.needs_review("ct-fbp", learned=False)
    unreviewed = load_pacs_config(write(tmp_path, {**GOOD, "deliver_learned_unreviewed": ["mri-rim"]}))
    assert not unreviewed.needs_review("mri-rim", True) and unreviewed.needs_review("mri-adps", True)
    archive = config.destination("archive")
    assert isinstance(archive, DicomWebDestination)
    monkeypatch.setenv("TEST_PACS_PASSWORD", "s3cret")
    assert archive.auth() == ("u", "s3cret")
    monkeypatch.delenv("TEST_PACS_PASSWORD")
    with pytest.raises(PacsConfigError, match=r"\$TEST_PACS_PASSWORD, which is not set"):
        archive.auth()
    with pytest.raises(KeyError, match="unknown PACS destination 'nope'; known: archive, modality"):
        config.destination("nope")


@pytest.mark.parametrize(("change", "message"), [
    ({"auto_deliver": {"*": ["elsewhere"]}}, r"auto_deliver\['\*'\]: unknown destination 'elsewhere'"),
    ({"study_lookup": "gone"}, "study_lookup: unknown destination 'gone'"),
    ({"destinations": {"a": {"kind": "dimse", "host": "h", "port": 70000, "called_ae": "X"}}},
     r"destinations.a.dimse.port"),
    ({"destinations": {"a": {"kind": "dimse", "host": "h", "port": 104, "called_ae": "WAY-TOO-LONG-AE-TITLE"}}},
     r"destinations.a.dimse.called_ae"),
    ({"destinations": {"a": {"kind": "dicomweb", "url": "ftp://x"}}}, r"destinations.a.dicomweb.url"),
    ({"destinations": {"a": {"kind": "dicomweb", "url": "http://x", "username": "u", "token": "t"}}},
     "either username/password or a token"),
    ({"destinations": {"bad name": {"kind": "dicomweb", "url": "http://x"}}}, "destination name 'bad name'"),
    ({"retries": {}}, r"retries: Extra inputs are not permitted"),
])
def test_refusals_name_the_key(tmp_path, change, message):
    path = write(tmp_path, {**GOOD, **change})
    with pytest.raises(PacsConfigError, match=message) as err:
        load_pacs_config(path)
    assert str(path) in str(err.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(PacsConfigError, match="not valid JSON"):
        load_pacs_config(write(tmp_path, "{nope"))
    with pytest.raises(PacsConfigError, match="cannot read it"):
        load_pacs_config(tmp_path / "missing.json")
    assert not load_pacs_config(None).enabled


def test_serve_refuses_a_bad_configuration_before_starting(tmp_path):
    import os
    import subprocess

    from conftest import ROOT, recon_command

    path = write(tmp_path, {"destinations": {"a": {"kind": "dimse", "host": "h", "port": 0, "called_ae": "X"}}})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RECON_PACS_CONFIG": str(path), "RECON_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([*recon_command(), "serve", "--port", "1"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2
    assert f"recon: error: PACS configuration {path}: destinations.a.dimse.port" in proc.stderr


def test_cors_only_for_configured_origins(tmp_path):
    from fastapi.testclient import TestClient

    from recon_service.api import create_app
    from recon_service.settings import Settings

    preflight = {"Origin": "https://viewer.example", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}
    app = create_app(Settings(data_dir=tmp_path, cors_origins=["https://viewer.example"], warmup=False,
                              run_workers=False))
    with TestClient(app) as client:
        allowed = client.options("/dicomweb/studies", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://viewer.example"
        other = client.options("/dicomweb/studies", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    with TestClient(create_app(Settings(data_dir=tmp_path / "b", warmup=False, run_workers=False))) as client:
        assert "access-control-allow-origin" not in client.options("/dicomweb/studies", headers=preflight).headers
