"""ops.images: PNG round trips at both compression levels, and damaged files as one line."""
import numpy as np
import pytest

from vs_hdrvid.ops.images import encode_png, read_image, write_png


@pytest.mark.parametrize("compression", [3, 9])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_roundtrip(tmp_path, dtype, compression):
    a = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, (19, 23, 3), endpoint=True).astype(dtype)
    a[5:9] = a[4]
    write_png(tmp_path / "a.png", a, compression=compression)
    b = read_image(tmp_path / "a.png")
    assert b.dtype == dtype and np.array_equal(a, b)
    assert encode_png(a, compression) == (tmp_path / "a.png").read_bytes()  # the same pixels, the same bytes
    assert not list(tmp_path.glob(".*.part"))


def test_damaged_png_is_one_line(tmp_path):
    data = encode_png(np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "cut.png").write_bytes(data[:-20])
    with pytest.raises(OSError, match=r"cut.png: the file is truncated"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(ValueError, match="uint8/uint16"):
        encode_png(np.zeros((8, 8, 3), np.float32))
