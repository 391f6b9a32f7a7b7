"""coarse: CoarseNet per frame from a linearised clip, with untrained weights from a temp folder.

Untrained networks give arbitrary blends, so the checks are about the node: windows, radiometry
(where the reference is kept by CoarseNet's mask the output must be the input radiance),
padding, props, and the errors a user meets (size, pattern, missing or corrupt weights).
"""
import shutil

import numpy as np
import pytest
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid import cli
from vs_hdrvid.eval.bench_nets import write_random_weights

from conftest import make_sequence, planes

PATTERNS = {2: [-1.5, 1.5], 3: [-2.0, 0.0, 2.0]}


@pytest.fixture(scope="module")
def wdir(tmp_path_factory):
    """Narrow, untrained coarse/refine weights of the shipped design (CoarseNet blend="merge")."""
    return write_random_weights(tmp_path_factory.mktemp("weights"), narrow=True, zero_flow=True)


@pytest.fixture(scope="module")
def paper_wdir(tmp_path_factory):
    """Narrow, randomly initialised weights of the paper's CoarseNet, flow output zeroed."""
    return write_random_weights(tmp_path_factory.mktemp("weights"), narrow=True, zero_flow=True, blend="paper")


def linear_clip(tmp_path, evs, frames=5, size=(64, 96), motion=(2.0, 1.0, 0.0, 1.0), align=True):
    seq = make_sequence(tmp_path, evs, frames, size=size, motion=motion)
    lin = hv.linearize(hv.read_images(seq.pattern), exposures=evs, device="cpu")
    return seq, (hv.align(lin, device="cpu") if align else lin)


@pytest.mark.parametrize("period", [2, 3])
def test_coarse_output_format_props_and_kept_radiance(tmp_path, paper_wdir, period):
    evs = PATTERNS[period]
    seq, lin = linear_clip(tmp_path, evs, frames=5)
    hdr = hv.coarse(lin, weights=paper_wdir, device="cpu")
    assert hdr.format.id == vs.RGBS and (hdr.width, hdr.height, hdr.num_frames) == (96, 64, 5)
    h_sat = 2.0 ** -min(evs)
    for n in range(5):  # both ends use the exposure-aware substitute neighbours
        f, ref = hdr.get_frame(n), lin.get_frame(n)
        out, h = planes(f), planes(ref)
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= h_sat * 1.001
        for key in ("HdrExposureEV", "HdrExposureIndex", "HdrExposureCount", "HdrSimilarityPrev", "_Transfer"):
            assert f.props[key] == ref.props[key], key
        # CoarseNet keeps the reference's own linearisation where it is well exposed (mask 0.4/0.9)
        ev = evs[n % period]
        lum = (np.clip(h * 2.0 ** ev, 0, 1) ** (1 / 2.2)).max(-1)
        keep = np.ones_like(lum, bool)
        if ev < max(evs):
            keep &= lum >= 0.41
        if ev > min(evs):
            keep &= lum <= 0.89
        assert keep.mean() > 0.05
        np.testing.assert_allclose(out[keep], h[keep], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("period", [2, 3])
def test_untrained_coarse_is_the_merge_with_dis_flows(tmp_path, wdir, period):
    """The shipped design starts from the classical answer: untrained, hv.coarse is hv.merge with
    the same classical_flow clips, frame for frame and bit for bit (issue 12's step-0 identity)."""
    _, lin = linear_clip(tmp_path, PATTERNS[period], frames=6)
    hdr = hv.coarse(lin, weights=wdir, device="cpu")
    ref = hv.merge(lin, radius=1, flow=[hv.classical_flow(lin, -1), hv.classical_flow(lin, 1)], device="cpu")
    for n in range(6):
        np.testing.assert_array_equal(planes(hdr.get_frame(n)), planes(ref.get_frame(n)))


def test_coarse_checks_flow_clips_at_build_time(tmp_path, wdir, paper_wdir):
    _, lin = linear_clip(tmp_path, PATTERNS[2], frames=3)
    with pytest.raises(vs.Error, match="one clip per neighbour offset"):
        hv.coarse(lin, weights=wdir, device="cpu", flow=[hv.classical_flow(lin, 1)])
    small = hv.classical_flow(lin, 1).resize.Point(48, 32)
    with pytest.raises(vs.Error, match="RGBS .* of the clip's size"):
        hv.coarse(lin, weights=wdir, device="cpu", flow=[small, small])
    with pytest.raises(vs.Error, match="estimate their own flow"):
        hv.coarse(lin, weights=paper_wdir, device="cpu", flow=[hv.classical_flow(lin, -1), hv.classical_flow(lin, 1)])


def test_coarse_pads_odd_sizes_and_runs_without_align(tmp_path, wdir):
    _, lin = linear_clip(tmp_path, [-1.5, 1.5], frames=3, size=(45, 71), align=False)
    hdr = hv.coarse(lin, weights=wdir, device="cpu")
    assert (hdr.width, hdr.height) == (71, 45)
    for n in range(3):
        assert np.isfinite(planes(hdr.get_frame(n))).all()


def test_coarse_rejects_small_frames(tmp_path, wdir):
    _, lin = linear_clip(tmp_path, [-1.5, 1.5], frames=3, size=(24, 40), align=False)
    with pytest.raises(vs.Error, match=r"hdrvid.coarse: .*at least 32x32"):
        hv.coarse(lin, weights=wdir, device="cpu")


def test_coarse_rejects_weights_for_another_pattern(tmp_path, wdir):
    _, lin = linear_clip(tmp_path, [-1.5, 1.5], frames=3, align=False)
    with pytest.raises(vs.Error, match=r"'coarse-3exp' were trained for 3-exposure .* 2-exposure"):
        hv.coarse(lin, weights=wdir / "coarse_3exp.safetensors", device="cpu")
    with pytest.raises(vs.Error, match=r"trained for 3-exposure"):
        hv.coarse(lin, weights="coarse-3exp", device="cpu")
    with pytest.raises(vs.Error, match=r"not coarse weights"):
        hv.coarse(lin, weights="refine-2exp", device="cpu")


def test_coarse_rejects_single_exposure_and_unlinear_clips(tmp_path, wdir):
    _, lin = linear_clip(tmp_path, [0.0], frames=3, align=False)
    with pytest.raises(vs.Error, match="alternating pattern of 2 or 3 exposures"):
        hv.coarse(lin, weights=wdir, device="cpu")
    with pytest.raises(vs.Error, match="hv.linearize"):
        hv.coarse(vs.core.std.BlankClip(format=vs.RGBS, width=64, height=64), weights=wdir)


def test_coarse_missing_weights_names_file_and_command(tmp_path):
    _, lin = linear_clip(tmp_path, [-1.5, 1.5], frames=3, align=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(vs.Error) as e:
        hv.coarse(lin, weights=tmp_path / "empty", device="cpu")
    msg = str(e.value)
    assert "coarse_2exp.safetensors" in msg and "missing" in msg
    assert "vs-hdrvid train coarse --exposures 2" in msg
    with pytest.raises(vs.Error, match="neither a known name"):
        hv.coarse(lin, weights=tmp_path / "nowhere", device="cpu")


def test_coarse_corrupt_weights_fail_the_sha256_check(tmp_path, wdir):
    _, lin = linear_clip(tmp_path, [-1.5, 1.5], frames=3, align=False)
    folder = tmp_path / "copy"
    shutil.copytree(wdir, folder)
    hv.coarse(lin, weights=folder, device="cpu")  # loads (and caches) the intact file
    path = folder / "coarse_2exp.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(vs.Error) as e:
        hv.coarse(lin, weights=folder, device="cpu")
    msg = str(e.value)
    assert "hdrvid.coarse" in msg and str(path) in msg and "sha256" in msg and "corrupt" in msg
    assert "vs-hdrvid train coarse --exposures 2" in msg


@pytest.mark.parametrize("method", ["coarse", "refine"])
def test_reconstruct_cli_with_network_methods(tmp_path, wdir, method, capsys):
    seq = make_sequence(tmp_path, [-1.5, 1.5], 4, size=(64, 96))
    out = tmp_path / "out" / "%05d.exr"
    rc = cli.main(["reconstruct", seq.pattern, "-o", str(out), "--exposures", "-1.5,1.5", "--method", method,
                   "--weights", str(wdir), "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{n:05d}.exr" for n in range(4)]
    back = hv.read_exr(str(out))
    assert back.num_frames == 4 and np.isfinite(planes(back.get_frame(1))).all()


def test_reconstruct_cli_missing_weights_is_one_line(tmp_path, capsys):
    seq = make_sequence(tmp_path, [-1.5, 1.5], 3, size=(64, 96))
    (tmp_path / "none").mkdir()
    rc = cli.main(["reconstruct", seq.pattern, "-o", str(tmp_path / "o" / "%05d.exr"), "--exposures", "-1.5,1.5",
                   "--method", "coarse", "--weights", str(tmp_path / "none"), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "coarse_2exp.safetensors" in err and "vs-hdrvid train coarse" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
