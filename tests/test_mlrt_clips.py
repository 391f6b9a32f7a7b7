"""``export.mlrt.network_clips``: the clips of an exported network's input planes, in order."""
from __future__ import annotations

import pytest
import torch
import vapoursynth as vs

import vs_hdrvid as hv
from vs_hdrvid import weights as W
from vs_hdrvid.export.mlrt import network_clips
from vs_hdrvid.models.dealthdr import DeAltHDR, DeAltHDRConfig
from vs_hdrvid.models.refinenet import RefineNet, RefineNetConfig

from conftest import make_sequence, planes


@pytest.fixture(scope="module")
def lin(tmp_path_factory):
    seq = make_sequence(tmp_path_factory.mktemp("mlrt"), [-2.0, 1.0], 5, size=(48, 64), motion=(1.0, 0.5, 0.0, 1.0))
    return hv.linearize(hv.read_images(seq.pattern), exposures=[-2.0, 1.0], device="cpu")


@pytest.mark.parametrize("flow_source,flow_clips", [("dis", 8), ("spynet", 0)])
def test_dealthdr_clips_follow_the_weights_flow_source(tmp_path, lin, flow_source, flow_clips):
    torch.manual_seed(0)
    W.write(DeAltHDR(DeAltHDRConfig.sized("tiny", flow_source=flow_source)), "dealthdr-2exp", tmp_path)
    clips = network_clips("dealthdr", lin, weights=tmp_path)
    assert len(clips) == 5 + flow_clips + 5  # window frames, flows both ways, EV planes
    assert all(c.format.id == vs.RGBS for c in clips[:5 + flow_clips]) and clips[-1].format.id == vs.GRAYS
    with pytest.raises(vs.Error, match="no dealthdr-2exp weights"):
        network_clips("dealthdr", lin, weights=tmp_path / "empty")


@pytest.mark.parametrize("temporal_base", [False, True])
def test_refine_clips_fuse_the_reference_for_temporal_base_weights(tmp_path, lin, temporal_base):
    W.write(RefineNet(RefineNetConfig(temporal_base=temporal_base)), "refine-2exp", tmp_path)
    hdr = hv.merge(lin)
    clips = network_clips("refine", lin, coarse=hdr, weights=tmp_path)
    assert len(clips) == 3 + 3 + 3  # coarse HDRs, radiance, EV planes
    expected = hv.temporal_fuse(hdr, lin) if temporal_base else hdr
    for n in (1, 2):
        assert (planes(clips[1].get_frame(n)) == planes(expected.get_frame(n))).all()
    assert (planes(clips[0].get_frame(2)) == planes(hdr.get_frame(1))).all()
