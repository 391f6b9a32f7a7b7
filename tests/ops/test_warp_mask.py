"""warp_similarity's grid and mask against the dense reference: kornia's warp and the mask built
from a per-pixel similarity_to_flow (what warp_similarity computed before the per-row solution)."""
import math

import pytest
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine

from vs_hdrvid.ops.warp import _affine_grid, _source_map, similarity_matrix, similarity_to_flow, warp_similarity


def dense_mask(m: torch.Tensor, src_hw, out_hw, tol: float = 1e-3) -> torch.Tensor:
    """The reference: every output pixel's source position from the dense flow, tested against the frame."""
    (h, w), (oh, ow) = src_hw, out_hw
    flow = similarity_to_flow(m, oh, ow)
    ys, xs = torch.meshgrid(torch.arange(oh, dtype=flow.dtype), torch.arange(ow, dtype=flow.dtype), indexing="ij")
    sx, sy = flow[:, 0] + xs, flow[:, 1] + ys
    inside = (sx >= -tol) & (sx <= w - 1 + tol) & (sy >= -tol) & (sy <= h - 1 + tol)
    return inside[:, None].float()


def random_similarities(n: int, h: int, w: int, seed: int, big: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    r = lambda s: (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * s  # noqa: E731
    angle = r(math.pi) if big else r(0.05)
    scale = 1 + (r(0.5) if big else r(0.03))
    return similarity_matrix(angle, scale, r(0.3 * w if big else 12.0), r(0.3 * h if big else 8.0),
                             center=(w / 2, h / 2), dtype=torch.float64)


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("dsize", [None, (31, 45)])
def test_mask_equals_dense_mask(big, dsize):
    h, w = 40, 56
    m = random_similarities(64, h, w, seed=1 + big, big=big)
    x = torch.rand(64, 1, h, w)
    _, mask = warp_similarity(x, m, return_mask=True, dsize=dsize)
    want = dense_mask(m, (h, w), dsize or (h, w))
    assert mask.dtype == x.dtype and mask.shape == want.shape
    assert torch.equal(mask, want)
    assert 0 < float(mask.mean()) < 1


def test_mask_in_float32_differs_only_at_knife_edges():
    """From a float32 matrix the dense mask rounds each pixel's position; the two may disagree only
    where a source coordinate is within float32 rounding of a bound."""
    h, w = 270, 480
    m = random_similarities(16, h, w, seed=5).float()
    _, mask = warp_similarity(torch.rand(16, 1, h, w), m, return_mask=True)
    want = dense_mask(m, (h, w), (h, w))
    exact = dense_mask(m.double(), (h, w), (h, w))
    assert torch.equal(mask, exact)
    assert (mask != want).sum() <= 16


@pytest.mark.parametrize("case", ["translate", "rotate", "outside"])
def test_mask_special_cases(case):
    h, w = 12, 16
    if case == "translate":  # a = 0 along y: whole rows in or out
        m = torch.tensor([[[1.0, 0.0, 2.5], [0.0, 1.0, -3.0]]])
    elif case == "rotate":  # 90 degrees: x depends only on the row
        m = similarity_matrix(math.pi / 2, center=(7.5, 5.5))
    else:  # everything leaves the frame
        m = torch.tensor([[[1.0, 0.0, 100.0], [0.0, 1.0, 0.0]]])
    _, mask = warp_similarity(torch.rand(1, 3, h, w), m, return_mask=True)
    torch.testing.assert_close(mask, dense_mask(m.double(), (h, w), (h, w)), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode,padding", [("bilinear", "border"), ("bilinear", "zeros"), ("nearest", "zeros")])
def test_warp_equals_kornia(dtype, mode, padding):
    h, w = 36, 52
    m = random_similarities(4, h, w, seed=3, big=True)
    x = torch.rand(4, 3, h, w, dtype=dtype)
    got = warp_similarity(x, m, padding_mode=padding, mode=mode)
    want = warp_affine(x, m.to(dtype), dsize=(h, w), mode=mode, padding_mode=padding, align_corners=True)
    if mode == "nearest":  # a half-pixel tie may round either way: compare where both agree on the source
        assert (got != want).float().mean() < 1e-3
    else:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_degenerate_sizes_still_warp():
    x = torch.rand(1, 2, 1, 7)
    out, mask = warp_similarity(x, torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]]), return_mask=True)
    assert out.shape == x.shape and mask.shape == (1, 1, 1, 7)
    assert mask[0, 0, 0].tolist() == [0, 1, 1, 1, 1, 1, 1]


def test_mask_half_precision_wide_frame():
    """Column indices past 2048 are not exact in float16: the comparison runs in float32."""
    m = torch.tensor([[[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]]])  # source x = q + 0.5: last column outside
    _, mask = warp_similarity(torch.rand(1, 1, 2, 2500, dtype=torch.float16), m, return_mask=True)
    assert mask.dtype == torch.float16
    assert mask[0, 0, 0, :2499].min() == 1 and mask[0, 0, 0, 2499] == 0


def test_banded_warp_into_given_tensors():
    """A frame of several CPU bands, written into caller tensors: the image sampled on the whole
    frame's grid and the dense mask, in the very tensors given."""
    h, w = 300, 1100  # 238 rows per band
    m = random_similarities(1, h, w, seed=5)
    x = torch.rand(1, 3, h, w)
    out, mask_out = torch.empty(1, 3, h, w), torch.empty(1, 1, h, w)
    got, mask = warp_similarity(x, m, return_mask=True, out=out, mask_out=mask_out)
    assert got is out and mask is mask_out
    grid = _affine_grid(_source_map(m), (h, w), (h, w), torch.float32)
    assert torch.equal(got, F.grid_sample(x, grid, padding_mode="border", align_corners=True))
    assert torch.equal(mask, dense_mask(m, (h, w), (h, w)))
    with pytest.raises(ValueError, match="out must be"):
        warp_similarity(x, m, out=torch.empty(1, 3, h, w - 1))
