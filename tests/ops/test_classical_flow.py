import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

from vs_hdrvid.ops.classical_flow import FLOW_METHODS, dense_flow, encode_luminance, flow_confidence  # noqa: E402
from vs_hdrvid.ops.warp import flow_warp  # noqa: E402


def _texture(h=96, w=128, seed=0):
    """Smooth random texture in linear [0, 1] (blurred noise, contrast stretched)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((h, w)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), 2.0)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return (0.02 + 0.9 * tex) ** 2.2  # linear luminance


def _shift(img, dx, dy):
    """``out(p) = img(p - (dx, dy))``: content moves by (dx, dy)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_recovers_subpixel_shift(method):
    ref = _texture()
    dx, dy = 2.5, -1.25
    mov = _shift(ref, dx, dy)  # ref(p) = mov(p + (dx, dy))
    flow = dense_flow(ref, mov, method=method)
    assert flow.shape == (2, 96, 128) and flow.dtype == np.float32
    inner = flow[:, 16:-16, 16:-16]
    assert abs(np.median(inner[0]) - dx) < 0.3
    assert abs(np.median(inner[1]) - dy) < 0.3
    assert np.mean(np.abs(inner[0] - dx)) < 0.3 and np.mean(np.abs(inner[1] - dy)) < 0.3


def test_flow_direction_aligns_mov_onto_ref():
    ref = _texture(seed=1)
    mov = _shift(ref, 3.0, 1.0)
    flow = dense_flow(ref, mov, method="dis")
    warped = flow_warp(torch.from_numpy(mov)[None, None], torch.from_numpy(flow)[None])[0, 0].numpy()
    err_aligned = np.abs(warped - ref)[16:-16, 16:-16].mean()
    err_raw = np.abs(mov - ref)[16:-16, 16:-16].mean()
    assert err_aligned < 0.25 * err_raw


def test_rgb_input_and_encoding():
    lum = _texture(32, 32)
    rgb = np.repeat(lum[..., None], 3, axis=-1)
    assert np.array_equal(encode_luminance(rgb), encode_luminance(lum))
    enc = encode_luminance(np.array([[0.0, 1.0, 2.0, 0.5**2.2]], dtype=np.float32))
    assert enc.dtype == np.uint8 and enc.tolist() == [[0, 255, 255, 128]]
    assert dense_flow(rgb, rgb, method="farneback", preset="ultrafast").shape == (2, 32, 32)


def test_bad_arguments():
    img = _texture(32, 32)
    with pytest.raises(ValueError):
        dense_flow(img, img, method="raft")
    with pytest.raises(ValueError):
        dense_flow(img, img, preset="slow")
    with pytest.raises(ValueError):
        dense_flow(img, img[:16])
    with pytest.raises(ValueError):
        flow_confidence(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))


def test_flow_confidence():
    h, w = 12, 16
    fw = np.zeros((2, h, w), np.float32)
    fw[0] = 2.0
    bw = -fw
    conf = flow_confidence(fw, bw)
    assert conf.shape == (h, w) and conf.dtype == np.float32
    assert np.allclose(conf[:, : w - 2], 1.0)
    assert np.all(conf[:, w - 2:] == 0.0)  # targets leave the frame
    # inconsistent pair: |fw + bw|^2 = 16 >> tolerance 0.01 * 8 + 0.5
    low = flow_confidence(fw, fw)
    assert np.all(low[:, : w - 2] < 1e-6)


def test_exposure_flow_pair_is_exposure_flow_both_ways():
    from vs_hdrvid.ops.classical_flow import exposure_flow, exposure_flow_pair

    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 48, 64, generator=g) * 0.3
    mov = torch.roll(ref, 2, dims=-1) * 1.1
    fw, bw = exposure_flow_pair(ref, mov, 1.0)
    assert np.array_equal(fw, exposure_flow(ref, mov, 1.0)[0]) and np.array_equal(bw, exposure_flow(mov, ref, 1.0)[0])
    assert np.median(fw[0]) == pytest.approx(2.0, abs=0.3) and np.median(bw[0]) == pytest.approx(-2.0, abs=0.3)
