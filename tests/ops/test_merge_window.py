"""merge_window (the merge band by band, neighbours warped on the way) against what it replaces: the
window warped by warp_similarity into one stack and merged by merge_exposures. Bit for bit."""
import pytest
import torch

from vs_hdrvid.ops.merge import MergeConfig, merge_exposures
from vs_hdrvid.ops.merge_window import merge_window
from vs_hdrvid.ops.warp import SimilarityBands, similarity_matrix, warp_similarity

from merge_fixture import expose, scene

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def window(h: int, w: int, evs, ref: int, seed: int = 3, b: int = 1):
    """Frames of a textured scene with a ghost, clipped highlights and black, and a small similarity
    per neighbour (rotation, scale and a sub-pixel shift, so warps leave columns uncovered)."""
    g = torch.Generator().manual_seed(seed)
    radiance = scene(b, h, w, seed=seed) * torch.exp2(torch.randn(b, 1, h, w, generator=g))
    radiance[..., h // 2:h // 2 + 5, 3:12] = 60.0  # clipped in every frame
    frames = expose(radiance, evs, quant=255)
    frames[:, (ref + 1) % len(evs), :, 10:22, 14:30] *= 3  # a ghost
    frames[:, :, :, 0, :4] = 0  # black in every frame
    warps = [None if i == ref else similarity_matrix(0.002 * (i - ref), 1 + 0.001 * (i - ref), 1.3 * (i - ref),
                                                     -0.6 * (i - ref), center=(w / 2, h / 2)).expand(b, 2, 3)
             for i in range(len(evs))]
    return [frames[:, i] for i in range(len(evs))], warps


def stacked(frames, warps, valid, evs, ref, cfg):
    """The merge as the node computed it: every neighbour warped whole, then merge_exposures."""
    aligned, usable = [], []
    for f, m, v in zip(frames, warps, valid):
        mask = torch.ones_like(f[:, :1])
        if m is not None:
            f, mask = warp_similarity(f, m, return_mask=True)
        aligned.append(f)
        usable.append(mask if v is None else mask * v)
    return merge_exposures(torch.stack(aligned, 1), torch.tensor(evs), torch.stack(usable, 1), ref, cfg)


CONFIGS = [MergeConfig(), MergeConfig(smooth=5, dilate=5, ghost_tolerance=0.4), MergeConfig(smooth=1, dilate=1),
           MergeConfig(smooth=3, dilate=1)]


@pytest.mark.parametrize("evs,ref", [([-1.5, 1.5, -1.5], 1), ([-2.0, 0.0, 2.0], 1), ([1.5, -1.5, 1.5], 0),
                                     ([2.0, -2.0, 0.0], 2), ([-1.5, 1.5], 0)])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "5x5", "no-filters", "box-only"])
def test_equals_stacked_merge(evs, ref, cfg):
    frames, warps = window(61, 40, evs, ref)
    want = stacked(frames, warps, [None] * len(evs), evs, ref, cfg)
    for band_pixels in (8 * 40, 1 << 16):  # bands of 8 rows plus the filters' reach, and one band
        got = merge_window(frames, evs, ref, warps, config=cfg, band_pixels=band_pixels)
        assert torch.equal(got, want), (got - want).abs().max()


def test_valid_flows_and_unwarped_neighbours():
    """Per-frame validity (a flow's confidence), a neighbour given already aligned, a batch of 2."""
    evs, ref = [-1.5, 1.5, -1.5], 1
    frames, warps = window(57, 48, evs, ref, seed=5, b=2)
    g = torch.Generator().manual_seed(9)
    valid = [torch.rand(2, 1, 57, 48, generator=g), None, (torch.rand(2, 1, 57, 48, generator=g) > 0.2).float()]
    warps[0] = None
    want = stacked(frames, warps, valid, evs, ref, MergeConfig())
    out = torch.full_like(want, float("nan"))
    got = merge_window(frames, evs, ref, warps, valid, out=out, band_pixels=10 * 48)
    assert got is out and torch.equal(got, want)


def test_reference_alone_and_all_clipped():
    """Neighbours invisible (warped fully out of the frame) fall back to the reference; a window
    clipped everywhere takes the shortest exposure's value."""
    evs, ref = [-1.5, 1.5, -1.5], 1
    frames, _ = window(40, 40, evs, ref)
    away = similarity_matrix(0.0, 1.0, 100.0, 0.0).expand(1, 2, 3)
    got = merge_window(frames, evs, ref, [away, None, away], band_pixels=8 * 40)
    assert torch.equal(got, stacked(frames, [away, None, away], [None] * 3, evs, ref, MergeConfig()))
    bright = [torch.full_like(f, 40.0) for f in frames]
    got = merge_window(bright, evs, ref, band_pixels=8 * 40)
    assert torch.equal(got, merge_exposures(torch.stack(bright, 1), torch.tensor(evs), None, ref))
    assert torch.allclose(got, torch.full_like(got, 40.0))


@pytest.mark.parametrize("device", DEVICES)
def test_large_frame_and_device(device):
    """A frame over many default-size bands (and one band on CUDA) equals the stacked merge."""
    evs, ref = [-2.0, 0.0, 2.0], 1
    frames, warps = window(200, 400, evs, ref, seed=11)
    frames = [f.to(device) for f in frames]
    warps = [m if m is None else m.to(device) for m in warps]
    want = stacked(frames, warps, [None] * 3, evs, ref, MergeConfig())
    assert torch.equal(merge_window(frames, evs, ref, warps, band_pixels=3000), want)


def test_similarity_bands_equal_warp_similarity():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 37, 53, generator=g)
    m = similarity_matrix(torch.tensor([0.03, -0.2]), torch.tensor([1.02, 0.97]), 2.5, -1.5, center=(26, 18))
    whole, mask = warp_similarity(x, m, return_mask=True)
    bands = SimilarityBands(x, m)
    for rows in (slice(0, 37), slice(0, 5), slice(30, 37), slice(11, 12)):
        assert torch.equal(bands.image(rows), whole[..., rows, :])
        assert torch.equal(bands.mask(rows), mask[..., rows, :])
        assert torch.equal(bands.mask(rows, slice(7, 20)), mask[..., rows, 7:20])
        c0, c1 = bands.inside(rows)
        assert (mask[..., rows, c0:c1] == 1).all()


def test_bad_arguments_raise():
    frames, warps = window(20, 20, [-1.5, 1.5], 0)
    with pytest.raises(ValueError, match="one shape"):
        merge_window([frames[0], frames[1][..., :10]], [-1.5, 1.5], 0)
    with pytest.raises(ValueError, match="one entry per frame"):
        merge_window(frames, [-1.5, 1.5, 0.0], 0)
    with pytest.raises(ValueError, match="not warped"):
        merge_window(frames, [-1.5, 1.5], 1, warps)
