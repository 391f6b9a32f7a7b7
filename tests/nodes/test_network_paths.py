"""The network nodes' inference paths: tiles, and the ONNX backends, against the torch path."""
import numpy as np
import pytest
import vapoursynth as vs

import vs_hdrvid as hv

from conftest import make_sequence, planes


def _lin(tmp_path, frames=3, size=(64, 96)):
    seq = make_sequence(tmp_path, [-1.5, 1.5], frames, size=size, motion=(2.0, 1.0, 0.0, 1.0))
    return hv.align(hv.linearize(hv.read_images(seq.pattern), exposures=[-1.5, 1.5], device="cpu"), device="cpu")


def test_tiled_coarse_and_refine_equal_whole_frames(tmp_path):
    lin = _lin(tmp_path)
    whole = hv.refine(hv.coarse(lin, device="cpu"), lin, device="cpu")
    tiled = hv.refine(hv.coarse(lin, device="cpu", tile=64), lin, device="cpu", tile=64)
    for n in range(lin.num_frames):
        assert np.abs(planes(tiled.get_frame(n)) - planes(whole.get_frame(n))).max() <= 1e-3


@pytest.mark.parametrize("kwargs, why", [({"tile": 100}, "multiple of 8"), ({"tile": 32}, "at least 64"),
                                         ({"max_memory": -1.0}, "positive"), ({"backend": "onnx"}, "backend must be"),
                                         ({"backend": "ort", "tile": 64}, "tile= and compile= are for")])
def test_bad_paths_fail_at_build_time(tmp_path, kwargs, why):
    lin = _lin(tmp_path)
    with pytest.raises(vs.Error, match=why):
        hv.coarse(lin, device="cpu", **kwargs)


def test_onnxruntime_backend_matches_torch(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("HDRVID_CACHE", str(tmp_path / "onnx"))
    lin = _lin(tmp_path)
    exact = hv.coarse(lin, device="cpu", fp32=True)
    ort = hv.coarse(lin, device="cpu", backend="ort")
    assert np.abs(planes(ort.get_frame(1)) - planes(exact.get_frame(1))).max() <= 1e-3
