"""merge node: HDR recovery against ground truth, ghost rejection, flow input, argument checks."""
import numpy as np
import pytest
import torch
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid.ops.merge import MergeConfig
from vs_hdrvid.ops.metrics import mu_law_normalised, psnr_mu

from conftest import clip_from_arrays, make_sequence, planes


def chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, np.float32)).permute(2, 0, 1)


def psnr(clip: vs.VideoNode, seq, n: int) -> float:
    return float(psnr_mu(chw(planes(clip.get_frame(n))), chw(seq.gt[n]), seq.h_sat))


def pipeline(seq, evs, **merge_args):
    lin = hv.linearize(hv.read_images(seq.pattern), exposures=evs, device="cpu")
    al = hv.align(lin, device="cpu")
    return lin, al, hv.merge(al, device="cpu", **merge_args)


@pytest.mark.parametrize("evs", [[-1.5, 1.5], [-2.0, 0.0, 2.0]])
def test_static_scene_beats_reference(tmp_path, evs):
    seq = make_sequence(tmp_path, evs, 6, motion=None)
    lin, _, merged = pipeline(seq, evs)
    assert merged.format.id == vs.RGBS and merged.num_frames == 6
    ref = [psnr(lin, seq, n) for n in range(6)]
    out = [psnr(merged, seq, n) for n in range(6)]
    assert np.mean(out) > np.mean(ref) + 6.0, (ref, out)
    # every frame, the first and last included (exposure-aware windows at both ends)
    assert min(out) > 50.0, out
    for n in range(6):
        assert merged.get_frame(n).props["HdrExposureEV"] == evs[n % len(evs)]


@pytest.mark.parametrize("radius", [1, 2])
def test_pan_recovers_hdr_at_both_ends(tmp_path, radius):
    seq = make_sequence(tmp_path, [-1.5, 1.5], 6, motion=(2.0, 1.0, 0.4, 1.005))
    lin, _, merged = pipeline(seq, [-1.5, 1.5], radius=radius)
    out = [psnr(merged, seq, n) for n in range(6)]
    ref = [psnr(lin, seq, n) for n in range(6)]
    for n in (1, 3, 5):  # long exposures: their highlights come from the short neighbours
        assert out[n] > ref[n] + 15.0, (n, ref, out)
    assert min(out) > 45.0, out


def object_error(clip: vs.VideoNode, seq, n: int) -> float:
    mask = torch.from_numpy(seq.object_masks[n])
    pred = mu_law_normalised(chw(planes(clip.get_frame(n))), seq.h_sat)
    gt = mu_law_normalised(chw(seq.gt[n]), seq.h_sat)
    return float(((pred - gt) ** 2)[:, mask].mean())


@pytest.mark.parametrize("motion", [None, (1.0, 0.5, 0.0, 1.0)], ids=["static", "subpixel-pan"])
def test_moving_object_does_not_ghost(tmp_path, motion):
    seq = make_sequence(tmp_path, [-1.5, 1.5], 6, motion=motion, moving_object=True)
    lin, al, merged = pipeline(seq, [-1.5, 1.5])
    naive = hv.merge(al, device="cpu", config=MergeConfig(ghost_tolerance=1e3, bound_margin=1e3))
    for n in (1, 3, 5):  # long-exposure references
        e_ref, e_merge = object_error(lin, seq, n), object_error(merged, seq, n)
        assert e_merge <= 2.0 * e_ref + 1e-7, (n, e_ref, e_merge)
        # the same measure catches a merge without ghost rejection
        assert object_error(naive, seq, n) > 20 * e_ref


def test_flow_clips_at_least_as_good_on_pan(tmp_path):
    evs = [-1.5, 1.5]
    seq = make_sequence(tmp_path, evs, 6, motion=(3.0, 1.5, 0.5, 1.0))
    lin, al, merged = pipeline(seq, evs)
    flows = [hv.classical_flow(al, o) for o in (-1, 1)]
    with_flow = hv.merge(al, flow=flows, device="cpu")
    assert with_flow.num_frames == 6
    p_flow = np.mean([psnr(with_flow, seq, n) for n in range(6)])
    p_plain = np.mean([psnr(merged, seq, n) for n in range(6)])
    p_ref = np.mean([psnr(lin, seq, n) for n in range(6)])
    assert p_flow > p_ref + 6.0
    assert p_flow >= p_plain - 1.0, (p_flow, p_plain)


def test_flow_confidence_zero_where_neighbour_leaves_frame(tmp_path):
    """A pan of 3 px: the flow to the previous frame points outside the frame in the first columns."""
    seq = make_sequence(tmp_path, [-1.5, 1.5], 4, motion=(3.0, 0.0, 0.0, 1.0))
    lin = hv.linearize(hv.read_images(seq.pattern), exposures=[-1.5, 1.5], device="cpu")
    flow = planes(hv.classical_flow(hv.align(lin, device="cpu"), -1).get_frame(2))
    np.testing.assert_allclose(np.median(flow[8:-8, 8:-8, 0]), -3.0, atol=0.1)
    assert flow[:, :2, 2].max() < 0.1  # columns 0, 1 map to x = -3, -2: outside the previous frame
    assert flow[8:-8, 8:-8, 2].mean() > 0.9


# ------------------------------------------------------------------------------------- arguments
def linear_clip(n: int = 6, evs=(-1.0, 1.0)) -> vs.VideoNode:
    src = vs.core.std.BlankClip(format=vs.RGBS, width=16, height=16, length=n, color=[0.3] * 3)
    return hv.linearize(src, exposures=list(evs), device="cpu")


def test_bad_arguments_raise():
    lin = linear_clip()
    for radius in (0, 5, 1.5):
        with pytest.raises(vs.Error, match="radius"):
            hv.merge(lin, radius=radius)
    with pytest.raises(vs.Error, match="exposure props"):
        hv.merge(vs.core.std.BlankClip(format=vs.RGBS, width=16, height=16, length=6))
    with pytest.raises(vs.Error, match="linear RGBS"):
        hv.merge(vs.core.std.BlankClip(format=vs.RGB24, width=16, height=16, length=6))
    flow = vs.core.std.BlankClip(lin)
    with pytest.raises(vs.Error, match="one clip per neighbour"):
        hv.merge(lin, flow=[flow])
    with pytest.raises(vs.Error, match="flow clips must be RGBS"):
        hv.merge(lin, flow=[flow.resize.Point(width=8, height=8)] * 2)
    with pytest.raises(vs.Error, match="frames"):
        hv.merge(lin, flow=[flow[:3]] * 2)
    with pytest.raises(vs.Error, match="compile=True is not available on CPU"):
        hv.merge(lin, device="cpu", compile=True)


def test_single_exposure_clip_raises_vs_error():
    src = vs.core.std.BlankClip(format=vs.RGBS, width=16, height=16, length=6, color=[0.3] * 3)
    single = hv.linearize(src, exposures=[0.0], device="cpu")
    with pytest.raises(vs.Error, match="single exposure"):
        hv.merge(single)


def test_too_short_for_window_raises():
    with pytest.raises(vs.Error, match="hdrvid.merge"):
        hv.merge(linear_clip(2, (-2.0, 0.0, 2.0)))
    hv.merge(linear_clip(3, (-2.0, 0.0, 2.0)), device="cpu").get_frame(2)  # one full period is enough


def test_merge_of_arrays_recovers_radiance():
    """Constant radiance seen by two exposures: the clipped long frame takes the short one's value."""
    h_true = np.full((12, 16, 3), 1.5, np.float32)
    evs = [-1.0, 1.0]
    frames = [np.minimum(h_true * 2.0 ** evs[k % 2], 1.0) / 2.0 ** evs[k % 2] for k in range(4)]
    props = [{"HdrExposureEV": evs[k % 2], "HdrExposureIndex": k % 2, "HdrExposureCount": 2,
              "HdrExposurePattern": evs} for k in range(4)]
    merged = hv.merge(clip_from_arrays(frames, props), device="cpu")
    for n in range(4):
        np.testing.assert_allclose(planes(merged.get_frame(n)), 1.5, rtol=3e-3)
