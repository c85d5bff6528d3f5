"""vaekit.staging: a folder appears whole or not at all (prepare's datasets and export's folders use it)."""

from __future__ import annotations

import os
import stat

import pytest

from vaekit import staging
from vaekit.staging import staged_folder


def test_the_folder_appears_only_when_the_block_succeeds_with_ordinary_permissions(tmp_path):
    out = tmp_path / "out"
    with staged_folder(out) as folder:
        assert folder.parent == tmp_path and folder.name.startswith(".out.partial-")
        (folder / "a.txt").write_text("a")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's 0700


def test_a_failing_block_leaves_neither_the_folder_nor_its_staging(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), staged_folder(out):
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_replace_keeps_the_old_folder_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with staged_folder(out, replace=True) as folder:
        (folder / "new.txt").write_text("new")
        assert (out / "old.txt").exists()
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no .out.old-* left

    real = os.replace

    def failing(src, dst):
        if ".partial-" in str(src):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(staging.os, "replace", failing)
    with pytest.raises(OSError), staged_folder(out, replace=True) as folder:
        (folder / "newer.txt").write_text("newer")
    assert [p.name for p in out.iterdir()] == ["new.txt"]  # put back
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_without_replace_a_folder_made_meanwhile_stays(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OSError), staged_folder(out) as folder:
        (folder / "mine.txt").write_text("mine")
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
