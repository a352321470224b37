"""Issue #14: a missing system dependency fails the suite with the install hint; nothing is ever skipped.

pytest runs a tiny test module in a subprocess with this suite's conftest, a PATH without any tool and a
PostgreSQL directory that does not exist: every test must fail (or error at setup), none may be skipped.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODULE = '''
import pytest
from dicom_checks import dciodvfy
from system_deps import require_tool


def test_dciodvfy(tmp_path):
    dciodvfy(tmp_path / "x.dcm")


def test_ismrmrd_generator():
    require_tool("ismrmrd_generate_cartesian_shepp_logan", "ismrmrd-tools")


def test_postgres(postgres_url):
    pass


def test_plain_skip():
    pytest.skip("not today")


@pytest.mark.skipif(True, reason="marked")
def test_marked_skip():
    pass
'''


def test_missing_tools_fail_with_the_install_hint_and_nothing_is_skipped(tmp_path):
    (tmp_path / "test_missing.py").write_text(MODULE)
    (tmp_path / "empty-bin").mkdir()
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin"), "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}",
           "RECON_TEST_POSTGRES_BIN": str(tmp_path / "no-postgres")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", "-rA",
                           "test_missing.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    summary = out.strip().splitlines()[-1]
    assert "skipped" not in summary and "passed" not in summary, summary
    assert summary.startswith("3 failed, 2 errors"), summary
    for outcome, test, hint in [
        ("FAILED", "test_dciodvfy", "dciodvfy not found on PATH: install the Debian package dicom3tools"),
        ("FAILED", "test_ismrmrd_generator", "install the Debian package ismrmrd-tools"),
        ("ERROR", "test_postgres", "install the Debian package postgresql"),
        ("FAILED", "test_plain_skip", "a skipped test fails in this suite"),
        ("ERROR", "test_marked_skip", "a skipped test fails in this suite"),
    ]:
        assert f"{outcome} test_missing.py::{test}" in out, (test, out)
        assert hint in out, (hint, out)
    assert out.count("bash scripts/install-system-deps.sh") >= 3
