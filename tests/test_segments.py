"""Segments (issue 16): the overlap each method's nodes request, and segments that make the one-process frames.

No Ray here: :func:`render_segment` is what a Ray task runs, called in-process.
"""
import numpy as np
import pytest
import vapoursynth as vs

from vs_hdrvid.bridge.requests import Read
from vs_hdrvid.bridge.windows import window_index
from vs_hdrvid.encode import frame_bytes, frame_light
from vs_hdrvid.reconstruct import Options, build, delivery_clip, write_output
from vs_hdrvid.segment_run import STREAM, Job, render_segment
from vs_hdrvid.segments import Frames, overlap_by_node, plan, split

from conftest import clip_from_arrays, make_sequence

core = vs.core


# ------------------------------------------------------------------------------- the arithmetic
def test_frames_union_and_count():
    f = Frames([(5, 8), (0, 2), (7, 10), (2, 3)])
    assert f.spans == ((0, 3), (5, 10)) and len(f) == 8 and (f.first, f.last) == (0, 9)
    assert Frames.of([3, 1, 2, 9]) == Frames([(1, 4), (9, 10)])


@pytest.mark.parametrize("offset", [-4, -3, -2, -1, 1, 2, 3, 4])
@pytest.mark.parametrize("period", [2, 3])
def test_exposure_read_matches_window_index_frame_by_frame(offset, period):
    n = 11
    read = Read(core.std.BlankClip(length=n), "exposure", offset, period, n)
    for a in range(n):
        for b in range(a + 1, n + 1):
            expect = Frames.of(window_index(m, offset, n, period) for m in range(a, b))
            assert Frames([(a, b)]).through(read) == expect, (a, b)


def test_clamped_and_offset_reads():
    parent = core.std.BlankClip(length=10)
    assert Frames([(0, 3)]).through(Read(parent, "clamped", -2, 1, 10)) == Frames([(0, 1)])
    assert Frames([(8, 10)]).through(Read(parent, "clamped", 3, 1, 10)) == Frames([(9, 10)])
    assert Frames([(2, 4)]).through(Read(parent, "offset", 5, 1, 10)) == Frames([(7, 9)])


def test_split():
    assert split(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert split(3, 8) == [(0, 1), (1, 2), (2, 3)]  # never an empty segment
    assert split(10, length=4) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError):
        split(10, length=0)


# ------------------------------------------------------------------- what the nodes really read
def _recorded(method, flow, evs, kind, bounds, frames=24):
    """(predicted, recorded) source frames of each segment, each made by a fresh graph."""
    rng = np.random.default_rng(5)
    arrays = [rng.random((48, 64, 3)).astype(np.float32) for _ in range(frames)]
    out = []
    for a, b in bounds:
        seen = set()
        base = clip_from_arrays(arrays)

        def count(n, f, seen=seen):
            seen.add(n)
            return f

        src = core.std.ModifyFrame(base, base, count)
        clip = delivery_clip(build(src, Options(exposures=evs, method=method, flow=flow, device="cpu")), kind)
        predicted = plan(clip, src, [(a, b)])[0].reads
        for _ in clip[a:b].frames(close=True):
            pass
        out.append((predicted, Frames.of(seen)))
    return out


@pytest.mark.parametrize("method,flow,evs,kind", [
    ("reference", "none", [-1.5, 1.5], "exr"),
    ("merge", "none", [-1.5, 1.5], "exr"),
    ("merge", "none", [-2.0, 0.0, 2.0], "video"),
    ("merge", "dis", [-2.0, 0.0, 2.0], "exr"),
    ("merge", "none", [-1.5, 1.5], "png"),
    ("coarse", "none", [-1.5, 1.5], "video"),
    ("coarse", "none", [-2.0, 0.0, 2.0], "exr"),
])
def test_reads_are_what_the_nodes_request_issue16(method, flow, evs, kind):
    for predicted, recorded in _recorded(method, flow, evs, kind, [(0, 5), (9, 14), (20, 24)]):
        assert predicted == recorded


@pytest.mark.slow
@pytest.mark.parametrize("method,evs", [("refine", [-1.5, 1.5]), ("dealthdr", [-2.0, 1.0])])
def test_reads_of_the_other_networks_issue16(method, evs):
    (predicted, recorded), = _recorded(method, "none", evs, "exr", [(9, 12)], frames=16)
    assert predicted == recorded


def test_overlap_by_node_names_the_nodes_issue16():
    clip = core.std.BlankClip(format=vs.RGBS, width=64, height=48, length=100)
    hdr = delivery_clip(build(clip, Options(exposures=[-1.5, 1.5], device="cpu")), "video")
    extra = overlap_by_node(hdr, 40, 60)
    assert extra["tonemap"] == 0 and extra["merge"] == 16  # tonemap's key: 8 frames each side
    assert extra["align"] == 18 and extra["linearize"] == 19  # merge's +-1, then align's previous frame


# ------------------------------------------- a boundary at every position gives the same frames
@pytest.fixture(scope="module", params=[[-1.5, 1.5], [-2.0, 0.0, 2.0]], ids=["2exp", "3exp"])
def clip_and_reference(request, tmp_path_factory):
    """A short sequence, and the one-process run's EXR and PNG files and HDR10 frames of it."""
    evs = request.param
    tmp = tmp_path_factory.mktemp(f"seg{len(evs)}")
    seq = make_sequence(tmp, evs, 3 * len(evs) + 1, size=(48, 64), motion=(1.0, 0.5, 0.0, 1.0), name="in")
    opts = Options(exposures=evs, method="merge", device="cpu")
    files = {kind: str(tmp / kind / f"%05d.{kind}") for kind in ("exr", "png")}
    for output in files.values():
        write_output(build(_source(seq.pattern), opts), output, progress=False)
    video = delivery_clip(build(_source(seq.pattern), opts), "video")
    frames = [(frame_bytes(f), frame_light(f.props)) for f in video.frames(close=True)]
    return seq, opts, files, frames


def _source(pattern):
    from vs_hdrvid.nodes import source

    return source(pattern)


@pytest.mark.parametrize("kind", ["exr", "png", "video"])
def test_a_boundary_at_every_position_gives_the_one_process_frames_issue16(clip_and_reference, kind, tmp_path):
    seq, opts, files, frames = clip_and_reference
    total = len(seq.gt)
    output = str(tmp_path / "o" / ("x.mkv" if kind == "video" else f"%05d.{kind}"))
    job = Job(seq.pattern, output, kind, opts)
    for cut in range(1, total):  # every position of the pattern, and next to both ends
        for index, (a, b) in enumerate([(0, cut), (cut, total)]):
            folder = tmp_path / f"c{cut}s{index}"
            folder.mkdir()
            result = render_segment(job, index, a, b, folder)
            if kind != "video":
                assert [final for _, final in result.files] == [output % n for n in range(a, b)]
                for (staged, _), n in zip(result.files, range(a, b)):
                    assert open(staged, "rb").read() == open(files[kind] % n, "rb").read(), (cut, n)
            else:
                assert result.stream == str(folder / STREAM)
                assert open(result.stream, "rb").read() == b"".join(d for d, _ in frames[a:b]), cut
                assert result.light == [light for _, light in frames[a:b]]
                assert result.props["MasteringDisplayMaxLuminance"] == 1000.0
