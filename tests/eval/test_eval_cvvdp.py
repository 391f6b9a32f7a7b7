import sys

import pytest
import torch

pytest.importorskip("pycvvdp")

from vs_hdrvid.eval import cvvdp as cv  # noqa: E402


def _video(t=2, h=32, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(t, 3, h, w, generator=g) * 0.8


def test_identical_is_ten_and_degraded_is_lower():
    gt = _video()
    assert cv.jod(gt, gt, h_sat=1.0) == pytest.approx(10.0, abs=1e-3)
    noisy = (gt + 0.05 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(1))).clamp(min=0)
    q_noisy = cv.jod(noisy, gt, h_sat=1.0)
    assert q_noisy < 9.5
    # (T, H, W, 3) numpy layout is accepted too
    assert cv.jod(gt.permute(0, 2, 3, 1).numpy(), gt.permute(0, 2, 3, 1).numpy(), 1.0) == pytest.approx(10.0, abs=1e-3)


def test_display_mapping():
    h = torch.tensor([0.0, 1.0, 2.0, 4.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    lin = cv.hdr_to_display(h, h_sat=2.0, eotf="linear", peak_nits=1000.0)
    assert lin[0, 0, 0].tolist() == pytest.approx([0.0, 500.0, 1000.0, 1000.0])
    pq = cv.hdr_to_display(h, h_sat=2.0, eotf="PQ", peak_nits=1000.0)
    assert pq[0, 1, 0, 2].item() == pytest.approx(0.7518, abs=1e-3)  # ST 2084 code value of 1000 cd/m2
    with pytest.raises(ValueError):
        cv.hdr_to_display(h, 1.0, eotf="sRGB")


def test_errors(monkeypatch):
    gt = _video()
    with pytest.raises(ValueError):
        cv.jod(gt, gt[:1], 1.0)
    with pytest.raises(ValueError):
        cv.jod(gt, gt, 1.0, display="standard_4k")  # an SDR display
    cv._metric.cache_clear()
    monkeypatch.setitem(sys.modules, "pycvvdp", None)
    with pytest.raises(ImportError, match="cvvdp"):
        cv.jod(gt, gt, 1.0)
    cv._metric.cache_clear()
