"""ops.exr: a write that fails leaves nothing behind, and damaged files are one line."""
import os

import numpy as np
import pytest

from vs_hdrvid.ops.exr import check_exr, read_exr, write_exr


def test_failed_write_leaves_no_part_file(tmp_path, monkeypatch):
    rgb = np.full((4, 6, 3), 0.5, np.float32)
    (tmp_path / "d.exr").mkdir()
    with pytest.raises(OSError, match="is a folder"):
        write_exr(tmp_path / "d.exr", rgb)

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match=r"x.exr: Permission denied"):
        write_exr(tmp_path / "x.exr", rgb)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.exr"]  # no .part, no x.exr
    write_exr(tmp_path / "new" / "y.exr", rgb)  # parent folders are created
    np.testing.assert_array_equal(read_exr(tmp_path / "new" / "y.exr"), rgb)


def test_truncated_exr_is_one_line(tmp_path):
    write_exr(tmp_path / "a.exr", np.zeros((40, 8, 3), np.float32))
    data = (tmp_path / "a.exr").read_bytes()
    with pytest.raises(OSError, match=r"a.exr: the (file|EXR header) is truncated"):
        check_exr(data[: len(data) // 2], tmp_path / "a.exr")
    with pytest.raises(OSError, match="not an EXR file"):
        check_exr(b"hello", tmp_path / "a.exr")
