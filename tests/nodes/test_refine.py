"""refine: RefineNet over consecutive coarse HDRs, with untrained weights from a temp folder."""
import numpy as np
import pytest
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid import bridge
from vs_hdrvid.eval.bench_nets import write_random_weights

from conftest import make_sequence, planes

PATTERNS = {2: [-1.5, 1.5], 3: [-2.0, 0.0, 2.0]}


@pytest.fixture(scope="module")
def wdir(tmp_path_factory):
    return write_random_weights(tmp_path_factory.mktemp("weights"), narrow=True, zero_flow=True)


def linear_clip(tmp_path, evs, frames=5, size=(64, 96)):
    seq = make_sequence(tmp_path, evs, frames, size=size, motion=(2.0, 1.0, 0.0, 1.0))
    lin = hv.linearize(hv.read_images(seq.pattern), exposures=evs, device="cpu")
    return seq, hv.align(lin, device="cpu")


@pytest.mark.parametrize("period", [2, 3])
def test_refine_output_keeps_coarse_where_reference_is_well_exposed(tmp_path, wdir, period):
    evs = PATTERNS[period]
    _, lin = linear_clip(tmp_path, evs)
    coarse = hv.coarse(lin, weights=wdir, device="cpu")
    bridge.counters.reset()
    hdr = hv.refine(coarse, lin, weights=wdir, device="cpu")
    assert hdr.format.id == vs.RGBS and (hdr.width, hdr.height, hdr.num_frames) == (96, 64, 5)
    h_sat = 2.0 ** -min(evs)
    for n in range(5):
        f, c, ref = hdr.get_frame(n), planes(coarse.get_frame(n)), lin.get_frame(n)
        out = planes(f)
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= h_sat * 1.001
        assert f.props["HdrExposureEV"] == ref.props["HdrExposureEV"]
        assert list(f.props["HdrSimilarityPrev"]) == list(ref.props["HdrSimilarityPrev"])
        # equation 5: the soft mask is 1 where the reference LDR lies within [0.15, 0.9]
        ev = evs[n % period]
        lum = (np.clip(planes(ref) * 2.0 ** ev, 0, 1) ** (1 / 2.2)).max(-1)
        keep = np.ones_like(lum, bool)
        if ev < max(evs):
            keep &= lum >= 0.16
        if ev > min(evs):
            keep &= lum <= 0.89
        assert keep.mean() > 0.05
        np.testing.assert_allclose(out[keep], c[keep], rtol=1e-4, atol=1e-6)
    assert bridge.counters.handoffs > 0  # coarse frames are taken as tensors, not uploaded again


def test_refine_pads_odd_sizes(tmp_path, wdir):
    _, lin = linear_clip(tmp_path, [-1.5, 1.5], frames=3, size=(37, 50))
    hdr = hv.refine(hv.coarse(lin, weights=wdir, device="cpu"), lin, weights=wdir, device="cpu")
    assert (hdr.width, hdr.height) == (50, 37)
    assert np.isfinite(planes(hdr.get_frame(2))).all()


def test_refine_checks_its_inputs(tmp_path, wdir):
    _, lin = linear_clip(tmp_path, [-1.5, 1.5], frames=4)
    coarse = hv.coarse(lin, weights=wdir, device="cpu")
    with pytest.raises(vs.Error, match=r"hdrvid.refine: clip \(3 frames.*must match"):
        hv.refine(coarse[:3], lin, weights=wdir, device="cpu")
    small = vs.core.resize.Point(coarse, width=48, height=32)
    with pytest.raises(vs.Error, match="must match"):
        hv.refine(small, lin, weights=wdir, device="cpu")
    with pytest.raises(vs.Error, match="RGBS output of hv.coarse"):
        hv.refine(vs.core.resize.Point(coarse, format=vs.YUV444PS, matrix_s="709"), lin, weights=wdir)
    with pytest.raises(vs.Error, match="not refine weights"):
        hv.refine(coarse, lin, weights=wdir / "coarse_2exp.safetensors", device="cpu")
    with pytest.raises(vs.Error, match=r"refine_2exp.safetensors.*vs-hdrvid train refine --exposures 2"):
        hv.refine(coarse, lin, weights=wdir.parent, device="cpu")
