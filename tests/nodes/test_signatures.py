"""Nodes that look alike: the clip first, num_streams with one default, arguments checked at build
time, and the old keyword names still working (with a DeprecationWarning) for one release."""
import inspect
import warnings

import numpy as np
import pytest
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid.bridge import NodeRunner, default_streams
from vs_hdrvid.devices import resolve_device

from conftest import make_sequence, planes

FRAME_NODES = ["linearize", "align", "merge", "classical_flow", "coarse", "refine", "temporal_fuse", "flow", "dealthdr", "tonemap"]


@pytest.mark.parametrize("name", FRAME_NODES)
def test_clip_first_and_num_streams_none(name):
    params = inspect.signature(getattr(hv, name)).parameters
    assert next(iter(params)) == "clip"
    assert params["num_streams"].default is None


def test_one_default_rule():
    assert NodeRunner("x", resolve_device("cpu")).num_streams == default_streams(resolve_device("cpu")) \
        == vs.core.num_threads
    assert NodeRunner("x", resolve_device("cpu"), network=True).num_streams == 1
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(vs.Error, match=r"hdrvid.x: num_streams must be a whole number >= 1 or None"):
            NodeRunner("x", resolve_device("cpu"), num_streams=bad)


def test_arguments_fail_at_build_time(tmp_path):
    seq = make_sequence(tmp_path, [-1.5, 1.5], 4)
    lin = hv.align(hv.linearize(hv.read_images(seq.pattern), exposures=[-1.5, 1.5], device="cpu"), device="cpu")
    with pytest.raises(vs.Error, match=r"hdrvid.classical_flow: preset must be one of"):
        hv.classical_flow(lin, 1, preset="slow")
    with pytest.raises(vs.Error, match=r"hdrvid.classical_flow: method must be one of"):
        hv.classical_flow(lin, 1, method="lk")
    with pytest.raises(vs.Error, match=r"hdrvid.merge: num_streams must be"):
        hv.merge(lin, num_streams=0, device="cpu")
    with pytest.raises(vs.Error, match=r"hdrvid.tonemap: num_streams must be"):
        hv.tonemap(lin, "pq", num_streams=-2, device="cpu")


def test_old_keyword_names_warn_and_still_work(tmp_path):
    seq = make_sequence(tmp_path, [-1.5, 1.5], 4, size=(48, 64))
    lin = hv.align(hv.linearize(hv.read_images(seq.pattern), exposures=[-1.5, 1.5], device="cpu"), device="cpu")
    with pytest.warns(DeprecationWarning, match=r"hv.coarse\(lin=...\) is deprecated; the argument is now clip="):
        old = hv.coarse(lin=lin, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = hv.coarse(lin, device="cpu")
    np.testing.assert_array_equal(planes(old.get_frame(1)), planes(new.get_frame(1)))
    with pytest.warns(DeprecationWarning, match=r"hv.refine\(coarse_clip=...\)"):
        hv.refine(coarse_clip=new, lin=lin, device="cpu")
    with pytest.warns(DeprecationWarning, match=r"hv.flow\(lin=...\)"):
        hv.flow(lin=lin, offset=1, device="cpu")
    with pytest.warns(DeprecationWarning, match=r"hv.dealthdr\(lin=...\)"):
        hv.dealthdr(lin=lin, device="cpu")
    with pytest.raises(vs.Error, match=r"hdrvid.coarse: lin= is the old name of clip=; give clip only"):
        hv.coarse(lin, lin=lin)
