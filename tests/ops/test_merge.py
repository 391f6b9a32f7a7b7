"""ops.merge: hat weights, the weight-free merge (function and module), ghost rejection."""
import pytest
import torch

from vs_hdrvid.ops.merge import Merge, MergeConfig, hat_weight, merge_exposures

from merge_fixture import expose, scene

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ----------------------------------------------------------------------------------- hat_weight
def test_hat_weight_shape_and_range():
    ldr = torch.linspace(-0.2, 1.2, 141).view(1, 1, 1, 141).expand(2, 1, 3, 141)
    w = hat_weight(ldr, 0.05, 0.92)
    assert w.shape == ldr.shape
    assert (w >= 0).all() and (w <= 1).all()
    v = lambda x: float(hat_weight(torch.tensor([x]), 0.05, 0.92))  # noqa: E731
    assert v(0.0) == 0 and v(0.025) == 0 and v(0.92) == 0 and v(1.0) == 0
    assert v(0.05) == pytest.approx(1) and v(0.5) == 1 and v(0.82) == pytest.approx(1)
    assert 0 < v(0.0375) < 1 and 0 < v(0.87) < 1
    assert v(0.0375) == pytest.approx(0.5) and v(0.87) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("device", DEVICES)
def test_module_agrees_with_function(device):
    h = scene(1).to(device)
    frames = expose(h, [-1.5, 1.5, -1.5], quant=255)
    valid = torch.rand(1, 3, 1, 24, 32, generator=torch.Generator().manual_seed(3)).to(device)
    cfg = MergeConfig(ghost_tolerance=0.4, dilate=3)
    ev = torch.tensor([-1.5, 1.5, -1.5], device=device)
    out_m = Merge(cfg)(frames, ev, valid, ref=1)
    out_f = merge_exposures(frames, ev, valid, 1, cfg)
    torch.testing.assert_close(out_m, out_f, rtol=0, atol=0)
    assert out_f.shape == (1, 3, 24, 32) and out_f.device.type == device
    assert Merge().config == MergeConfig()


# ------------------------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("evs,ref", [([-1.5, 1.5], 0), ([-1.5, 1.5], 1), ([-2.0, 0.0, 2.0], 1),
                                     ([2.0, -2.0, 0.0], 0)])
def test_recovers_radiance_where_any_frame_is_well_exposed(evs, ref):
    h = scene()
    out = merge_exposures(expose(h, evs, quant=65535), torch.tensor(evs), ref=ref)
    ldr = [(h * 2.0 ** e).clamp(0, 1).pow(1 / 2.2) for e in evs]
    covered = torch.stack([(x > 0.1) & (x < 0.85) for x in ldr]).any(0)
    assert covered.float().mean() > 0.8
    rel = (out / h - 1).abs()[covered]
    assert rel.max() < 2e-2, rel.max()
    assert rel.median() < 1e-3, rel.median()
    # where every frame is (nearly) clipped, the shortest exposure's value is a lower bound
    never = torch.stack([x >= 0.92 for x in ldr]).all(0)
    assert never.any()
    h_short = h.clamp(max=2.0 ** -min(evs))
    assert (out[never] >= h_short[never] * 0.999).all()


@pytest.mark.parametrize("evs,ref", [([-1.5, 1.5], 1), ([-2.0, 0.0, 2.0], 1), ([-2.0, 0.0, 2.0], 2)])
def test_clipped_reference_does_not_bias_highlights(evs, ref):
    """Where the reference is clipped and a shorter frame measures the radiance, the clipped
    reference value (a lower bound, not a measurement) must not pull the result down."""
    h = scene()
    out = merge_exposures(expose(h, evs, quant=65535), torch.tensor(evs), ref=ref)
    ldr = [(h * 2.0 ** e).clamp(0, 1).pow(1 / 2.2) for e in evs]
    measured = (ldr[ref] >= 1.0) & torch.stack([(x > 0.1) & (x < 0.85) for x in ldr]).any(0)
    assert measured.any()
    rel = (out / h - 1)[measured]
    assert rel.abs().max() < 2e-3, rel.min()


def test_reference_alone_and_invalid_neighbours():
    h = scene()
    frames = expose(h, [-1.5, 1.5])
    torch.testing.assert_close(merge_exposures(frames[:, :1], torch.tensor([-1.5])), frames[:, 0])
    valid = torch.zeros(1, 2, 1, 24, 32)
    out = merge_exposures(frames, torch.tensor([-1.5, 1.5]), valid, ref=0)
    torch.testing.assert_close(out, frames[:, 0], rtol=1e-5, atol=0)


def test_ghost_rejected_inside_reference_well_exposed_range():
    h = torch.full((1, 3, 24, 32), 0.1)
    frames = expose(h, [-1.5, 1.5])
    frames[:, 1, :, 8:16, 8:20] = 0.2  # an object only in the neighbour, 1 stop brighter
    out = merge_exposures(frames, torch.tensor([-1.5, 1.5]), ref=0)
    torch.testing.assert_close(out[..., :4, :], h[..., :4, :], rtol=1e-4, atol=0)  # away from it
    # inside the object (2 px from its edges, past the rejection dilation) the neighbour is dropped;
    # it has 8x the reference's exposure weight, so a soft acceptance of 1 % already leaks 7 %
    inner = out[..., 10:14, 10:18]
    assert (inner / 0.1 - 1).abs().max() < 0.01, inner.max()
    # without rejection the object would bleed in
    loose = merge_exposures(frames, torch.tensor([-1.5, 1.5]), ref=0,
                            config=MergeConfig(ghost_tolerance=100.0))
    assert (loose[..., 8:16, 8:20] > 0.15).all()


def test_ghost_rejected_where_reference_is_clipped():
    h = torch.full((1, 3, 24, 32), 1.0)  # clipped in the EV+1.5 reference (saturates at 0.35)
    frames = expose(h, [1.5, -1.5])
    frames[:, 1, :, 4:12, 4:12] = 0.05  # the neighbour shows something darker than the clip level
    out = merge_exposures(frames, torch.tensor([1.5, -1.5]), ref=0)
    torch.testing.assert_close(out[..., 16:, 16:], h[..., 16:, 16:], rtol=1e-2, atol=0)
    assert (out[..., 4:12, 4:12] >= 2.0 ** -1.5 * 0.99).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_ev_and_dtype(dtype):
    h = scene(2).to(dtype)
    f1 = expose(h[:1], [-1.5, 1.5])
    f2 = expose(h[1:], [1.0, -1.0])
    ev = torch.tensor([[-1.5, 1.5], [1.0, -1.0]], dtype=dtype)
    out = merge_exposures(torch.cat([f1, f2]), ev, ref=0)
    assert out.dtype == dtype
    torch.testing.assert_close(out[:1], merge_exposures(f1, ev[0], ref=0))
    torch.testing.assert_close(out[1:], merge_exposures(f2, ev[1], ref=0))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="B, T, 3, H, W"):
        merge_exposures(torch.zeros(2, 3, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="B, T, 3, H, W"):
        merge_exposures(torch.zeros(1, 2, 1, 8, 8), torch.zeros(2))
