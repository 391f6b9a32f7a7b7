import math

import pytest
import torch

from vs_hdrvid.ops.color import bt709_to_bt2020, bt2020_to_bt709, rgb_to_luminance, rgb_to_ycbcr, ycbcr_to_rgb
from vs_hdrvid.ops.tonemap import (
    MuLaw,
    Reinhard,
    bt709_inverse_oetf,
    bt709_oetf,
    hlg_display_to_scene,
    hlg_inverse_oetf,
    hlg_oetf,
    hlg_ootf,
    hlg_ootf_inverse,
    hlg_system_gamma,
    inverse_mulaw,
    log_average_luminance,
    mulaw,
    pq_decode,
    pq_encode,
    reinhard,
    srgb_decode,
    srgb_encode,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
T = torch.tensor


# --------------------------------------------------------------------------------------- PQ
@pytest.mark.parametrize("device", DEVICES)
def test_pq_reference_values(device):
    nits = T([0.0, 100.0, 1000.0, 10000.0], dtype=torch.float64, device=device)
    sig = pq_encode(nits)
    c1, m2 = 3424 / 4096, 2523 / 4096 * 128
    expect = T([c1**m2, 0.508078, 0.751827, 1.0], dtype=torch.float64, device=device)
    torch.testing.assert_close(sig, expect, atol=1e-6, rtol=0)
    assert 7.0e-7 < sig[0].item() < 7.6e-7
    torch.testing.assert_close(pq_decode(sig), nits, atol=1e-6, rtol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_pq_round_trip(device, dtype):
    nits = torch.logspace(-3, 4, 200, device=device).to(dtype)
    back = pq_decode(pq_encode(nits))
    assert back.dtype == dtype
    rtol = 5e-3 if dtype == torch.float16 else 5e-4
    torch.testing.assert_close(back.float(), nits.float(), rtol=rtol, atol=1e-4)
    s = torch.linspace(0, 1, 101, device=device)
    torch.testing.assert_close(pq_encode(pq_decode(s)), s, atol=3e-5, rtol=0)
    assert pq_encode(T([20000.0], device=device)).item() == 1.0


# -------------------------------------------------------------------------------------- HLG
@pytest.mark.parametrize("device", DEVICES)
def test_hlg_reference_values_and_round_trip(device):
    e = T([0.0, 1 / 12, 1.0], dtype=torch.float64, device=device)
    torch.testing.assert_close(hlg_oetf(e), T([0.0, 0.5, 1.0], dtype=torch.float64, device=device),
                               atol=1e-7, rtol=0)
    x = torch.linspace(0, 1, 301, dtype=torch.float64, device=device)
    torch.testing.assert_close(hlg_inverse_oetf(hlg_oetf(x)), x, atol=1e-12, rtol=0)
    torch.testing.assert_close(hlg_oetf(hlg_inverse_oetf(x)), x, atol=1e-8, rtol=0)  # constants are rounded
    # continuity at the segment boundary
    b = T([1 / 12 - 1e-9, 1 / 12 + 1e-9], dtype=torch.float64)
    assert abs(hlg_oetf(b).diff().item()) < 1e-6


def _hlg_code_bt2100(display_nits: float, peak: float) -> float:
    """10-bit narrow-range HLG code of a grey of ``display_nits`` on a ``peak`` display, straight
    from BT.2100-2 (Table 5: gamma 1.2 + 0.42 log10(Lw / 1000), inverse OOTF, OETF), in float64."""
    gamma = 1.2 + 0.42 * math.log10(peak / 1000)
    e = (display_nits / peak) ** (1 / gamma)  # grey: Ys = E, F_D = Lw * E ** gamma
    signal = math.sqrt(3 * e) if e <= 1 / 12 else 0.17883277 * math.log(12 * e - 0.28466892) + 0.55991073
    return 64 + 876 * signal


@pytest.mark.parametrize("peak,gamma", [(400.0, 1.0329), (1000.0, 1.2), (2000.0, 1.3264)])
def test_hlg_system_gamma_follows_bt2100_issue15(peak, gamma):
    """BT.2100's 1.2 + 0.42 log10(Lw / 1000) for 400..2000 cd/m2, not the extended 1.111 ** log2 model,
    which is 14.5 (400 nits) and 6.8 (2000 nits) 10-bit codes off for a dim grey."""
    assert hlg_system_gamma(peak) == pytest.approx(gamma, abs=5e-5)
    for nits in (0.5, 5.0, 50.0, 0.6 * peak):
        grey = torch.full((1, 3, 1, 1), nits, dtype=torch.float64)
        code = 64 + 876 * float(hlg_oetf(hlg_display_to_scene(grey, peak))[0, 0, 0, 0])
        assert code == pytest.approx(_hlg_code_bt2100(nits, peak), abs=0.05), nits
    # outside 400..2000 the extended model of BT.2390 continues the curve
    assert hlg_system_gamma(4000) == pytest.approx(1.2 * 1.111 ** 2)
    assert hlg_system_gamma(100) == pytest.approx(1.2 * 1.111 ** math.log2(0.1))


def test_hlg_ootf():
    assert hlg_system_gamma(1000) == pytest.approx(1.2)
    e = torch.rand(2, 3, 4, 5, dtype=torch.float64) * 0.9 + 0.05
    for peak in (400.0, 1000.0, 4000.0):
        d = hlg_ootf(e, peak)
        torch.testing.assert_close(hlg_ootf_inverse(d, peak), e)
        torch.testing.assert_close(hlg_display_to_scene(d, peak), e)
    # grey scene light 1 -> peak; display luminance follows Ys ** gamma
    grey = torch.full((1, 3, 1, 1), 0.25, dtype=torch.float64)
    torch.testing.assert_close(hlg_ootf(torch.ones_like(grey)), torch.full_like(grey, 1000.0))
    torch.testing.assert_close(hlg_ootf(grey), torch.full_like(grey, 1000 * 0.25**1.2))
    with pytest.raises(ValueError, match="peak_nits"):
        hlg_system_gamma(0)


# ----------------------------------------------------------------------------------- mu-law
@pytest.mark.parametrize("device", DEVICES)
def test_mulaw(device):
    x = torch.linspace(0, 1, 101, dtype=torch.float64, device=device)
    y = mulaw(x)
    assert y[0].item() == 0 and y[-1].item() == pytest.approx(1.0)
    assert (y.diff() > 0).all()
    torch.testing.assert_close(inverse_mulaw(y), x)
    assert mulaw(T([0.5], dtype=torch.float64)).item() == pytest.approx(math.log1p(2500) / math.log1p(5000))
    torch.testing.assert_close(MuLaw(50.0)(x), mulaw(x, 50.0))
    torch.testing.assert_close(MuLaw(50.0, inverse=True)(y), inverse_mulaw(y, 50.0))
    assert mulaw(x.half()).dtype == torch.float16
    with pytest.raises(ValueError, match="mu"):
        mulaw(x, mu=0)
    with pytest.raises(ValueError, match="floating"):
        mulaw(torch.arange(3))


# --------------------------------------------------------------------------------- Reinhard
@pytest.mark.parametrize("device", DEVICES)
def test_reinhard(device):
    g = torch.Generator().manual_seed(0)
    x = torch.exp(torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64) * 2).to(device)
    out = reinhard(x)
    assert out.shape == x.shape
    y_out = rgb_to_luminance(out)
    assert (y_out >= 0).all() and (y_out < 1).all()
    torch.testing.assert_close(out[:, 0] / out[:, 1], x[:, 0] / x[:, 1])  # colour ratios kept
    # the log-average maps to the key
    la = log_average_luminance(x)
    assert la.shape == (2,)
    grey = la.view(2, 1, 1, 1).expand(2, 3, 1, 1).contiguous()
    torch.testing.assert_close(reinhard(grey, log_avg=la), torch.full_like(grey, 0.18 / 1.18))
    # with a white point, Lm == white maps to 1
    w = 4.0
    lum = torch.full((1, 1, 1, 1), w * 4.0, dtype=torch.float64, device=device)
    torch.testing.assert_close(reinhard(lum, key=0.5, white=w, log_avg=2.0), torch.ones_like(lum))
    # module, and scale invariance of the automatic key
    torch.testing.assert_close(Reinhard(0.3)(x), reinhard(x, 0.3))
    torch.testing.assert_close(reinhard(10 * x), out, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="B, 1|3"):
        reinhard(torch.rand(2, 2, 4, 4))
    with pytest.raises(ValueError, match="positive"):
        reinhard(x, key=0)


# ------------------------------------------------------------------------------- SDR curves
def test_bt709_and_srgb():
    v = bt709_oetf(T([0.0, 0.018053968510807, 1.0], dtype=torch.float64))
    torch.testing.assert_close(v, T([0.0, 4.5 * 0.018053968510807, 1.0], dtype=torch.float64))
    x = torch.linspace(0, 1, 501, dtype=torch.float64)
    torch.testing.assert_close(bt709_inverse_oetf(bt709_oetf(x)), x)
    torch.testing.assert_close(srgb_decode(srgb_encode(x)), x)
    assert srgb_encode(T([0.5])).item() == pytest.approx(0.735357, abs=1e-5)
    assert bt709_oetf(T([0.5])).item() == pytest.approx(1.09929682680944 * 0.5**0.45 - 0.09929682680944)


# -------------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("fn,lo,hi", [
    (mulaw, 0.01, 1.0), (inverse_mulaw, 0.0, 1.0), (pq_encode, 1.0, 9000.0), (pq_decode, 0.1, 0.95),
    (hlg_oetf, 0.01, 0.99), (hlg_inverse_oetf, 0.01, 0.99), (bt709_oetf, 0.03, 0.99),
    (lambda x: reinhard(x, white=3.0), 0.01, 2.0), (lambda x: hlg_ootf_inverse(x, 1000.0), 1.0, 900.0),
])
def test_gradcheck(fn, lo, hi):
    g = torch.Generator().manual_seed(1)
    x = (lo + (hi - lo) * torch.rand(1, 3, 3, 4, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-7 * max(1.0, hi), atol=1e-5)


# ------------------------------------------------------------------------------------ colour
@pytest.mark.parametrize("device", DEVICES)
def test_color(device):
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64, device=device)
    m = bt709_to_bt2020(torch.eye(3, dtype=torch.float64, device=device).view(3, 3, 1, 1)).squeeze(-1).squeeze(-1)
    bt2087 = T([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]],
               dtype=torch.float64, device=device)
    torch.testing.assert_close(m.T, bt2087, atol=1e-4, rtol=0)
    torch.testing.assert_close(bt2020_to_bt709(bt709_to_bt2020(x)), x)
    white = torch.ones(1, 3, 2, 2, dtype=torch.float64, device=device)
    torch.testing.assert_close(bt709_to_bt2020(white), white)
    torch.testing.assert_close(rgb_to_luminance(white, "2020"), torch.ones(1, 1, 2, 2, dtype=torch.float64,
                                                                               device=device))
    y = rgb_to_luminance(x)
    assert y.shape == (2, 1, 4, 5)
    torch.testing.assert_close(y, 0.2126 * x[:, :1] + 0.7152 * x[:, 1:2] + 0.0722 * x[:, 2:])
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(x, "2020"), "2020"), x)
    ycc = rgb_to_ycbcr(white)
    torch.testing.assert_close(ycc[:, 1:], torch.zeros_like(ycc[:, 1:]), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="primaries"):
        rgb_to_luminance(x, "601")
    with pytest.raises(ValueError, match="RGB"):
        bt709_to_bt2020(torch.rand(2, 4, 4, 4))


def test_pq_numpy_curve_matches_torch_and_float64():
    """The tonemap node's CPU path (issue 14): numpy's curves, the same formula; both within 3e-7 of
    the float64 PQ curve, and within 4e-7 of each other (a 16-bit code is 1.5e-5)."""
    import numpy as np

    from vs_hdrvid.ops.tonemap import (PQ_C1, PQ_C2, PQ_C3, PQ_M1, PQ_M2, pq_encode_normalized_,
                                       pq_encode_normalized_numpy_)

    y = np.concatenate([[0.0, 1.0, 2.0, -1.0], np.geomspace(1e-9, 1, 200_000),
                        np.random.default_rng(0).random(200_000)]).astype(np.float32)
    p = np.clip(y.astype(np.float64), 0, 1) ** PQ_M1
    exact = ((PQ_C1 + PQ_C2 * p) / (1 + PQ_C3 * p)) ** PQ_M2
    fast = pq_encode_normalized_numpy_(y.copy())
    slow = pq_encode_normalized_(torch.from_numpy(y.copy())).numpy()
    assert np.abs(fast - exact).max() < 3e-7 and np.abs(slow - exact).max() < 3e-7
    assert np.abs(fast - slow).max() < 4e-7
    out = y.copy()
    assert pq_encode_normalized_numpy_(out) is out  # in place
