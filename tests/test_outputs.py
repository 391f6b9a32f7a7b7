"""vs_hdrvid.outputs: one writer per output, atomic files, and a failed run takes back only its own."""
import os
from pathlib import Path

import pytest

from vs_hdrvid.outputs import OutputBusy, OutputError, atomic_path, claim


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_claim_is_exclusive_and_released(tmp_path):
    out = tmp_path / "o" / "%05d.exr"
    with claim(out) as first:
        assert files(tmp_path / "o") == [".%05d.exr.lock"]
        with pytest.raises(OutputBusy, match=f"pid {os.getpid()}"):
            with claim(out):
                pass
        with claim(tmp_path / "o" / "%05d.png"):  # another output in the same folder is free
            pass
        with first.atomic(tmp_path / "o" / "00000.exr") as tmp:
            Path(tmp).write_bytes(b"frame")
    assert files(tmp_path / "o") == ["00000.exr"]
    with claim(out):  # free again
        pass


def test_a_lock_file_left_by_a_killed_run_does_not_block(tmp_path):
    (tmp_path / ".x.mkv.lock").write_text("12345\n")  # nobody holds it
    with claim(tmp_path / "x.mkv"):
        pass
    assert files(tmp_path) == []


def test_failed_run_removes_its_files_and_folders_only(tmp_path):
    (tmp_path / "keep.txt").write_text("not the run's")
    out = tmp_path / "a" / "b" / "%03d.png"
    with pytest.raises(RuntimeError):
        with claim(out) as c:
            for n in range(3):
                with c.atomic(Path(os.fspath(out) % n)) as tmp:
                    Path(tmp).write_bytes(b"x")
            raise RuntimeError("frame 3 failed")
    assert files(tmp_path) == ["keep.txt"]  # a/ and a/b/ were the run's: removed


def test_failed_rename_leaves_no_temporary_issue15(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise IsADirectoryError(21, "Is a directory", src, None, dst)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError, match=r"cannot write .*x\.exr: Is a directory$") as info:
        with atomic_path(tmp_path / "x.exr") as tmp:
            Path(tmp).write_bytes(b"data")
    assert ".part" not in str(info.value)
    assert files(tmp_path) == []


def test_atomic_path_errors_name_the_file_not_the_temporary(tmp_path):
    (tmp_path / "d.exr").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        with atomic_path(tmp_path / "d.exr"):
            pass
    with pytest.raises(OutputError, match=r"cannot write .*y\.png: No space left on device$"):
        with atomic_path(tmp_path / "y.png"):
            raise OSError(28, "No space left on device")
    assert files(tmp_path) == ["d.exr"]


def test_claim_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        with claim(tmp_path / "blocker" / "out" / "%05d.exr"):
            pass
    assert files(tmp_path) == ["blocker"]
