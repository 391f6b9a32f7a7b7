"""dealthdr: DeAltHDR per frame from a linearised 2-exposure clip, with untrained weights from a temp folder.

An untrained DeAltHDR (zero head) returns its merge of the window, so on a static scene with zero
flow clips the output is the scene radiance: that checks the node's window, LDR round trip, flow
plumbing and output scale. The rest is about props and the errors a user meets.
"""
import logging
import math

import numpy as np
import pytest
import torch
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid import cli
from vs_hdrvid import weights as W
from vs_hdrvid.models.dealthdr import DeAltHDR, DeAltHDRConfig

from conftest import make_sequence, planes

EVS = [-2.0, 1.0]
core = vs.core


@pytest.fixture(scope="module")
def wdir(tmp_path_factory):
    """An untrained narrow DeAltHDR (head zero, so it returns its merge) and its manifest entry."""
    folder = tmp_path_factory.mktemp("dealthdr-weights")
    torch.manual_seed(0)
    cfg = DeAltHDRConfig.from_dict(DeAltHDRConfig.small().to_dict() | {"dim": 8})
    net = DeAltHDR(cfg)
    W.write(net, "dealthdr-2exp", folder, recipe={"training": "none (tests)"})
    return folder


@pytest.fixture(scope="module")
def wdir_dis(tmp_path_factory):
    """An untrained narrow DeAltHDR of the classical-flow design (``flow_source="dis"``, as shipped)."""
    folder = tmp_path_factory.mktemp("dealthdr-dis-weights")
    torch.manual_seed(0)
    W.write(DeAltHDR(DeAltHDRConfig.sized("tiny", flow_source="dis")), "dealthdr-2exp", folder,
            recipe={"training": "none (tests)"})
    return folder



@pytest.fixture(scope="module")
def wdir_dis_head(tmp_path_factory):
    """The classical-flow design with a random non-zero head, so the encoder features reach the output."""
    folder = tmp_path_factory.mktemp("dealthdr-dis-head-weights")
    torch.manual_seed(0)
    net = DeAltHDR(DeAltHDRConfig.sized("tiny", flow_source="dis"))
    torch.nn.init.normal_(net.head.weight, std=0.05)
    W.write(net, "dealthdr-2exp", folder, recipe={"training": "none (tests)"})
    return folder


def linear_clip(tmp_path, evs=EVS, frames=5, size=(48, 64), motion=(1.0, 0.5, 0.0, 1.0)):
    seq = make_sequence(tmp_path, evs, frames, size=size, motion=motion)
    return seq, hv.linearize(hv.read_images(seq.pattern), exposures=evs, device="cpu")


def zero_flow(lin, n=4):
    blank = core.std.BlankClip(format=vs.RGBS, width=lin.width, height=lin.height, length=lin.num_frames,
                               color=[0.0, 0.0, 1.0])
    return [blank] * n


def test_dealthdr_output_format_and_props(tmp_path, wdir):
    _, lin = linear_clip(tmp_path)
    lin = hv.align(lin, device="cpu")
    hdr = hv.dealthdr(lin, weights=wdir, device="cpu")
    assert hdr.format.id == vs.RGBS and (hdr.width, hdr.height, hdr.num_frames) == (64, 48, 5)
    for n in (0, 2, 4):  # the ends use the substitute neighbours
        f, ref = hdr.get_frame(n), lin.get_frame(n)
        out = planes(f)
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 2.0 ** 2 * 1.001
        assert 0.0 <= f.props["HdrAttentionRatio"] <= 1.0
        for key in ("HdrExposureEV", "HdrExposureIndex", "HdrExposureCount", "_Transfer"):
            assert f.props[key] == ref.props[key], key


def test_dealthdr_attention_ratio_follows_s(tmp_path, wdir):
    _, lin = linear_clip(tmp_path, frames=3)
    ratio = {s: hv.dealthdr(lin, s=s, weights=wdir, device="cpu").get_frame(1).props["HdrAttentionRatio"]
             for s in (0.0, 15.0, math.inf)}
    assert ratio[0.0] == 0.0 and ratio[math.inf] == 1.0 and 0.0 <= ratio[15.0] <= 1.0


def test_dealthdr_static_scene_with_zero_flow_clips_is_the_radiance(tmp_path, wdir):
    seq, lin = linear_clip(tmp_path, frames=5, motion=None)
    hdr = hv.dealthdr(lin, s=1e3, flow=zero_flow(lin), weights=wdir, device="cpu")
    for n in (1, 2):
        f = hdr.get_frame(n)
        assert f.props["HdrAttentionRatio"] == 0.0  # the given flows are consistent; no SpyNet ran
        out, gt = planes(f), seq.gt[n].astype(np.float64)
        ok = (gt * 2.0 ** EVS[0] > 0.02) & (gt < 2.0 ** -EVS[0] * 0.95)  # above the short frame's floor
        assert ok.mean() > 0.5
        rel = np.abs(out[ok] - gt[ok]) / gt[ok]
        assert np.median(rel) < 0.01 and rel.max() < 0.1  # 8-bit quantisation only
    # the flow clips are really used: a shifted flow changes the result
    shifted = core.std.BlankClip(format=vs.RGBS, width=lin.width, height=lin.height, length=lin.num_frames,
                                 color=[3.0, 0.0, 1.0])
    moved = hv.dealthdr(lin, s=1e3, flow=[shifted] * 4, weights=wdir, device="cpu")
    assert np.abs(planes(moved.get_frame(2)) - planes(hdr.get_frame(2))).max() > 1e-3


def test_dealthdr_reads_forward_and_backward_flows_from_the_offset_clips(tmp_path, wdir):
    """Clip ``o`` holds the flow ``t -> t+o``; the node takes ``t+o -> t`` from clip ``-o`` at ``t+o``.

    The scene pans 2 px per frame, so frame ``t+o`` backward-warped by ``2 o`` px is frame ``t``:
    with those clips the (untrained, merging) network returns the radiance away from the border and
    the forward-backward check passes except at the clamped border; flows that all point the same
    way fail it."""
    seq, lin = linear_clip(tmp_path, frames=5, motion=(2.0, 0.0, 0.0, 1.0))

    def pan(o):
        return core.std.BlankClip(format=vs.RGBS, width=lin.width, height=lin.height, length=lin.num_frames,
                                  color=[2.0 * o, 0.0, 1.0])

    ratio = {}
    for name, flows in (("consistent", [pan(o) for o in (-2, -1, 1, 2)]),
                        ("one-way", [pan(abs(o)) for o in (-2, -1, 1, 2)])):
        f = hv.dealthdr(lin, s=1e3, flow=flows, weights=wdir, device="cpu").get_frame(2)
        ratio[name] = f.props["HdrAttentionRatio"]
        if name == "consistent":
            out, gt = planes(f)[:, 6:-6], seq.gt[2][:, 6:-6].astype(np.float64)
            ok = (gt * 2.0 ** EVS[0] > 0.02) & (gt < 2.0 ** -EVS[0] * 0.95)
            rel = np.abs(out[ok] - gt[ok]) / gt[ok]
            assert ok.mean() > 0.5 and np.median(rel) < 0.01 and np.percentile(rel, 99) < 0.05
    assert ratio["consistent"] < 0.15 and ratio["one-way"] > 0.3, ratio


def test_dealthdr_rejects_bad_arguments(tmp_path, wdir):
    _, lin = linear_clip(tmp_path, frames=3)
    for s in (-1, math.nan, -math.inf, "fast"):
        with pytest.raises(vs.Error, match=r"hdrvid.dealthdr: s must be"):
            hv.dealthdr(lin, s=s, weights=wdir, device="cpu")
    for flows in (zero_flow(lin, 3), zero_flow(lin, 5), zero_flow(lin, 1)[0]):
        with pytest.raises(vs.Error, match="one clip per neighbour offset"):
            hv.dealthdr(lin, flow=flows, weights=wdir, device="cpu")
    small = core.std.BlankClip(format=vs.RGBS, width=32, height=32, length=lin.num_frames)
    with pytest.raises(vs.Error, match="RGBS .* of the clip's size"):
        hv.dealthdr(lin, flow=[small] * 4, weights=wdir, device="cpu")
    _, lin3 = linear_clip(tmp_path / "three", evs=[-2.0, 0.0, 2.0], frames=3)
    with pytest.raises(vs.Error, match="2-exposure alternating patterns; the clip has 3"):
        hv.dealthdr(lin3, weights=wdir, device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(vs.Error, match=r"dealthdr_2exp.safetensors.*missing.*vs-hdrvid train dealthdr"):
        hv.dealthdr(lin, weights=tmp_path / "empty", device="cpu")


def test_dealthdr_warns_about_another_exposure_ratio(tmp_path, wdir, caplog):
    _, lin = linear_clip(tmp_path, evs=[-0.5, 0.5], frames=3)
    _, trained = linear_clip(tmp_path / "trained", frames=3)
    with caplog.at_level(logging.WARNING, logger="vs_hdrvid"):
        hv.dealthdr(trained, weights=wdir, device="cpu")
        assert not caplog.records
        hv.dealthdr(lin, weights=wdir, device="cpu")
    assert any("1 stops apart" in r.getMessage() and "EV -2/+1" in r.getMessage() for r in caplog.records)


def _run_cli(argv, capsys):
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors exit from inside main
        status = e.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("s", ["-1", "nan", "x"])
def test_reconstruct_cli_rejects_bad_s_in_one_line(tmp_path, s, capsys):
    seq = make_sequence(tmp_path, EVS, 3, size=(48, 64))
    status, err = _run_cli(["reconstruct", seq.pattern, "-o", tmp_path / "o" / "%05d.exr", "--exposures=-2,1",
                            "--method", "dealthdr", f"--s={s}", "--device", "cpu", "--quiet"], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("vs-hdrvid: error:"), err
    assert "--s" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_reconstruct_cli_dealthdr(tmp_path, wdir, capsys):
    seq = make_sequence(tmp_path, EVS, 3, size=(48, 64))
    out = tmp_path / "out" / "%05d.exr"
    status, err = _run_cli(["reconstruct", seq.pattern, "-o", out, "--exposures=-2,1", "--method", "dealthdr",
                            "--s", "inf", "--weights", wdir, "--device", "cpu", "--quiet"], capsys)
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{n:05d}.exr" for n in range(3)]
    back = hv.read_exr(str(out))
    assert np.isfinite(planes(back.get_frame(1))).all()


def test_dealthdr_of_the_classical_flow_design_computes_the_dis_flows_itself(tmp_path, wdir_dis):
    """Without flow clips, weights with ``flow_source="dis"`` get ``classical_flow(clip, o)`` for
    each neighbour, as in training: the same frames as with those clips given."""
    _, lin = linear_clip(tmp_path, frames=5)
    own = hv.dealthdr(lin, s=15.0, weights=wdir_dis, device="cpu", fp32=True)
    given = hv.dealthdr(lin, s=15.0, flow=[hv.classical_flow(lin, o) for o in (-2, -1, 1, 2)], weights=wdir_dis,
                        device="cpu", fp32=True)
    zero = hv.dealthdr(lin, s=15.0, flow=zero_flow(lin), weights=wdir_dis, device="cpu", fp32=True)
    for n in (1, 2, 3):
        a, b = own.get_frame(n), given.get_frame(n)
        np.testing.assert_array_equal(planes(a), planes(b))
        assert a.props["HdrAttentionRatio"] == b.props["HdrAttentionRatio"]
    assert np.abs(planes(own.get_frame(2)) - planes(zero.get_frame(2))).max() > 1e-3  # the scene moves


def test_dealthdr_reuses_encoder_features_whatever_the_order_frames_are_asked_in(tmp_path, wdir_dis_head):
    """The node keeps each frame's encoder features for the windows that share it: frames asked
    for backwards, or one alone, are those asked for in order (the ends included)."""
    _, lin = linear_clip(tmp_path, frames=7)
    flows = [hv.classical_flow(lin, o) for o in (-2, -1, 1, 2)]

    def node():
        return hv.dealthdr(lin, s=15.0, flow=flows, weights=wdir_dis_head, device="cpu", fp32=True)

    forward = node()
    ahead = [planes(forward.get_frame(n)) for n in range(7)]
    backward = node()
    for n in reversed(range(7)):
        np.testing.assert_allclose(planes(backward.get_frame(n)), ahead[n], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(planes(node().get_frame(4)), ahead[4], rtol=1e-5, atol=1e-6)
    assert np.abs(ahead[3] - ahead[4]).max() > 1e-3
