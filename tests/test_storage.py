"""Upload storage: safe names, paths kept inside DATA_DIR, durable writes, limits, nothing left on refusal."""

import hashlib
import os

import pytest

from recon_service.storage import (
    StorageError,
    UploadArea,
    UploadTooLarge,
    result_file,
    safe_name,
    upload_dir,
    within,
)


@pytest.mark.parametrize("name, expected", [
    ("scan.h5", "scan.h5"), ("../../etc/passwd", "passwd"), ("/abs", "abs"), ("a/../../b", "b"),
    ("..\\..\\win.ini", "win.ini"), ("..", "upload"), ("", "upload"), (None, "upload"), (".hidden", "hidden"),
    ("a\x00b.h5", "a_b.h5"), ("ü.h5", "_.h5"), ("a..b.h5", "a.b.h5"), ("dir/", "upload"),
    ("x" * 200 + ".nii.gz", "x" * 97 + ".gz"), ("y" * 150, "y" * 100),
])
def test_safe_name(name, expected):
    assert safe_name(name) == expected


def test_within_refuses_escapes_including_symlinks(tmp_path):
    root = tmp_path / "data"
    (root / "uploads").mkdir(parents=True)
    assert within(root, root / "uploads" / "x") == (root / "uploads" / "x").resolve()
    for bad in ("../outside", "/etc/passwd", "uploads/../../x"):
        with pytest.raises(StorageError, match="outside the data directory"):
            within(root, root / bad if not bad.startswith("/") else type(root)(bad))
    os.symlink(tmp_path, root / "uploads" / "link")
    with pytest.raises(StorageError):
        within(root, root / "uploads" / "link" / "escaped")
    with pytest.raises(StorageError, match="invalid job id"):
        upload_dir(root, "../x")
    with pytest.raises(StorageError, match="must be relative"):
        result_file(root, "/etc/passwd")
    with pytest.raises(StorageError):
        result_file(root, "results/../../secret")


def test_upload_area_writes_complete_files_and_discards(tmp_path):
    area = UploadArea(tmp_path, "job1", max_bytes=100)
    writer = area.open("../scan.h5")
    writer.write(b"abc")
    writer.write(b"def")
    assert [p.name for p in area.directory.iterdir()] == [".0.part"]  # not visible under its final name yet
    stored = writer.finish()
    area.add(stored)
    area.sync()
    assert stored.relpath == "uploads/job1/0-scan.h5" and stored.path.read_bytes() == b"abcdef"
    assert stored.size == 6 and stored.sha256 == hashlib.sha256(b"abcdef").hexdigest()
    assert [p.name for p in area.directory.iterdir()] == ["0-scan.h5"]

    second = area.open("big")
    with pytest.raises(UploadTooLarge, match="exceed the limit"):
        second.write(b"x" * 95)  # 6 + 95 > 100 bytes in total
    second.abort()
    area.discard()
    assert not area.directory.exists() and (tmp_path / "uploads").is_dir()
    UploadArea(tmp_path, "job2", 10).open("a").abort()
    with pytest.raises(FileExistsError):  # a job id is used once
        UploadArea(tmp_path, "job2", 10).open("b")
