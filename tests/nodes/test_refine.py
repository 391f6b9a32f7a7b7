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


def test_refine_with_temporal_base_starts_from_the_temporal_fusion(tmp_path):
    """Weights with ``temporal_base`` and a zero head: the node returns the fusion of the coarse window."""
    import torch

    from vs_hdrvid import weights as weights_mod
    from vs_hdrvid.eval.bench_nets import network_configs
    from vs_hdrvid.models.refinenet import RefineNet, RefineNetConfig
    from vs_hdrvid.ops.temporal_fuse import temporal_fuse

    folder = write_random_weights(tmp_path / "w", periods=(2,), narrow=True, zero_flow=True)
    cfg = network_configs(2, narrow=True)["refine"].to_dict() | {"temporal_base": True}
    weights_mod.write(RefineNet(RefineNetConfig.from_dict(cfg)), "refine-2exp", folder)
    evs = [-1.5, 1.5]
    seq = make_sequence(tmp_path, evs, 5, motion=None)  # static: the similarity alignment is the identity
    lin = hv.linearize(hv.read_images(seq.pattern), exposures=evs, device="cpu")
    coarse = hv.coarse(lin, weights=folder, device="cpu")
    hdr = hv.refine(coarse, lin, weights=folder, device="cpu", fp32=True)  # the exact path
    for n in (1, 2, 3):
        window = torch.stack([torch.from_numpy(planes(coarse.get_frame(m))).permute(2, 0, 1) for m in (n - 1, n, n + 1)])
        fused = temporal_fuse(window[None], torch.tensor([2.0 ** -min(evs)]))[0].permute(1, 2, 0).numpy()
        out, ref = planes(hdr.get_frame(n)), planes(coarse.get_frame(n))
        np.testing.assert_allclose(out, fused, rtol=1e-3, atol=1e-5, err_msg=f"frame {n}")
        assert np.abs(out - ref).max() > 1e-4  # not the coarse HDR itself


def test_temporal_fuse_node_denoises_a_noisy_static_clip_and_checks_its_inputs(tmp_path):
    evs = [-1.5, 1.5]
    seq = make_sequence(tmp_path, evs, 5, motion=None)
    lin = hv.linearize(hv.read_images(seq.pattern), exposures=evs, device="cpu")
    rng = np.random.default_rng(0)
    clean = hv.merge(lin)
    noise = [rng.normal(0, 0.15, (64, 96, 3)).astype(np.float32) for _ in range(5)]

    def add_noise(n, f):
        out = f.copy()
        for p in range(3):
            np.asarray(out[p])[:] = np.maximum(np.asarray(f[p]) * (1 + noise[n][..., p]), 0)
        return out

    noisy = clean.std.ModifyFrame(clean, add_noise)
    fused = hv.temporal_fuse(noisy, lin, device="cpu")
    assert (fused.num_frames, fused.format.id) == (5, vs.RGBS)
    err = lambda a, b: float(np.abs(np.log1p(5000 * a) - np.log1p(5000 * b)).mean())  # noqa: E731
    for n in (1, 2, 3):
        c = planes(clean.get_frame(n))
        assert err(planes(fused.get_frame(n)), c) < 0.8 * err(planes(noisy.get_frame(n)), c)
    with pytest.raises(vs.Error, match="hdrvid.temporal_fuse: strength must be"):
        hv.temporal_fuse(noisy, lin, strength=0)
    with pytest.raises(vs.Error, match="hdrvid.temporal_fuse: clip .* must match"):
        hv.temporal_fuse(noisy[:4], lin)
    with pytest.raises(vs.Error, match="hdrvid.temporal_fuse: clip must be the RGBS output of hv.merge"):
        hv.temporal_fuse(lin.resize.Point(format=vs.RGB24), lin)
