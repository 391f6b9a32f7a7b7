"""reconstruct.build: the graph of every method is built without rendering a frame (issue 15)."""
import numpy as np
import pytest
import vapoursynth as vs

from vs_hdrvid import nodes
from vs_hdrvid.reconstruct import Options, build

from conftest import clip_from_arrays

core = vs.core


@pytest.mark.parametrize("method,flow", [("reference", "none"), ("merge", "none"), ("merge", "dis"),
                                         ("coarse", "none"), ("refine", "none"), ("dealthdr", "none")])
def test_build_renders_no_frame_issue15(method, flow):
    rng = np.random.default_rng(5)
    clip = clip_from_arrays([rng.random((48, 64, 3)).astype(np.float32) for _ in range(8)])
    seen = []

    def count(n, f):
        seen.append(n)
        return f

    src = core.std.ModifyFrame(clip, clip, count)
    hdr = build(src, Options(exposures=[-1.5, 1.5], method=method, flow=flow, device="cpu"))
    nodes.tonemap(hdr, "mulaw", device="cpu")
    nodes.tonemap(hdr, "pq", device="cpu")
    assert seen == []  # align's output was read at frame 0 by every node built on it
    assert hdr.get_frame(3).props["HdrExposurePattern"] is not None


def test_temporal_fuse_follows_the_methods_that_do_not_fuse_already():
    rng = np.random.default_rng(6)
    clip = clip_from_arrays([rng.random((48, 64, 3)).astype(np.float32) for _ in range(6)])
    plain = build(clip, Options(exposures=[-1.5, 1.5], method="merge", flow="dis", device="cpu"))
    fused = build(clip, Options(exposures=[-1.5, 1.5], method="merge", flow="dis", device="cpu", temporal_fuse=True))
    assert fused.num_frames == plain.num_frames == 6
    a, b = (np.stack([np.asarray(c.get_frame(2)[p]) for p in range(3)]) for c in (plain, fused))
    assert np.isfinite(b).all() and not np.array_equal(a, b)
    for method in ("reference", "refine"):
        with pytest.raises(ValueError, match="--temporal-fuse follows merge, coarse or dealthdr"):
            build(clip, Options(exposures=[-1.5, 1.5], method=method, device="cpu", temporal_fuse=True))
