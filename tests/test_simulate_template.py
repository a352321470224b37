"""The one ICBM152 template loader: what brain MRI and pseudo-CT simulation read, and its errors."""

import functools

import numpy as np
import pytest

from pipelines.data import InputError
from pipelines.simulate import brain, ct, template
from recon_service.cli import main

INSTALL = "pip install 'recon-service[data]'"


def test_template_maps_share_one_grid():
    maps, affine = template.load_icbm152()
    assert set(maps) == {"t1", "gm", "wm"}
    assert all(m.shape == (197, 233, 189) and m.dtype == np.float32 for m in maps.values())
    assert maps["t1"].max() > 1 and 0 <= maps["gm"].min() and maps["gm"].max() <= 255  # stored 0..255 values
    assert np.allclose(affine[:3, :3], np.eye(3)) and affine.dtype == np.float64


def test_both_simulations_use_the_same_template():
    maps, affine = template.load_icbm152()
    cube, _ = brain.load_template()
    gm = (maps["gm"] / 255.0).transpose(2, 1, 0)  # (z, y, x), padded to the 240 mm cube
    start = [(brain.CUBE_MM - n) // 2 for n in gm.shape]
    inner = tuple(slice(b, b + n) for b, n in zip(start, gm.shape, strict=True))
    assert np.array_equal(cube["gm"][inner], gm) and cube["gm"].sum() == pytest.approx(gm.sum(), rel=1e-6)
    _, ct_affine = ct.brain_pseudo_ct()
    assert np.array_equal(ct_affine, affine)


@pytest.fixture
def no_nilearn(monkeypatch):
    """nilearn missing, and the simulations' caches of the template empty."""
    monkeypatch.setattr(template, "_nilearn_package", lambda: None)
    monkeypatch.setattr(brain, "load_template", functools.lru_cache(maxsize=1)(brain.load_template.__wrapped__))
    monkeypatch.setattr(ct, "brain_pseudo_ct", functools.lru_cache(maxsize=1)(ct.brain_pseudo_ct.__wrapped__))
    monkeypatch.setattr(ct, "brain_components", functools.lru_cache(maxsize=1)(ct.brain_components.__wrapped__))


def test_missing_nilearn_says_what_to_install(no_nilearn):
    with pytest.raises(InputError, match="nilearn.*not installed") as err:
        template.load_icbm152()
    assert INSTALL in str(err.value)
    for load in (brain.load_template, ct.brain_pseudo_ct, ct.brain_components):
        with pytest.raises(InputError, match="recon-service\\[data\\]"):
            load()


def test_missing_template_file_names_it(monkeypatch, tmp_path):
    monkeypatch.setattr(template, "_nilearn_package", lambda: tmp_path)
    with pytest.raises(InputError, match="file missing") as err:
        template.load_icbm152()
    assert "mni_icbm152_t1" in str(err.value) and INSTALL in str(err.value)


@pytest.mark.parametrize("args", [["simulate", "mri", "--max-files", "1"],
                                  ["simulate", "ct", "--views", "4", "--source", "brain", "--size", "16",
                                   "--slices", "1"]])
def test_cli_reports_a_missing_template_without_a_traceback(no_nilearn, tmp_path, capsys, args):
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "recon: error:" in err and INSTALL in err and "Traceback" not in err
