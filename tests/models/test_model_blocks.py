"""Tests of vs_hdrvid.models.blocks: padding, radiometry, masks (eq. 5), configs."""

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from vs_hdrvid.models.blocks import (
    ConfigMixin,
    hdr_scale,
    ldr_to_hdr,
    pad_to_multiple,
    reexpose,
    well_exposed_mask,
)


@pytest.mark.parametrize("shape", [(1, 3, 30, 45), (2, 3, 3, 17, 8), (1, 2, 32, 16)])
def test_pad_to_multiple_shapes_and_crop(shape):
    x = torch.rand(shape)
    xp, crop = pad_to_multiple(x, 16)
    assert xp.shape[:-2] == x.shape[:-2]
    assert xp.shape[-2] % 16 == 0 and xp.shape[-1] % 16 == 0
    assert xp.shape[-2] - x.shape[-2] < 16 and xp.shape[-1] - x.shape[-1] < 16
    assert torch.equal(crop(xp), x)


def test_pad_to_multiple_reflects_and_falls_back_on_tiny_inputs():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    xp, _ = pad_to_multiple(x, 4)  # pad 2 rows >= 2: replicate; pad 1 col: would reflect alone
    assert xp.shape == (1, 1, 4, 4)
    assert torch.equal(xp[0, 0, 3, :3], x[0, 0, 1])
    xp, _ = pad_to_multiple(torch.rand(1, 1, 8, 7), 8)
    assert torch.equal(xp[..., 7], xp[..., 5])  # reflect: the padded column mirrors column 5


def test_ldr_to_hdr_and_reexpose():
    ldr = torch.rand(2, 3, 4, 4) * 0.5
    ev = torch.tensor([-1.5, 1.5])
    hdr = ldr_to_hdr(ldr, ev)
    assert torch.allclose(hdr, ldr.pow(2.2) / torch.exp2(ev).view(-1, 1, 1, 1))
    assert torch.equal(reexpose(ldr, ev, ev), ldr)
    # the same radiance seen at another exposure, where nothing clips
    up = reexpose(ldr, 0.0, -1.0)
    assert torch.allclose(ldr_to_hdr(up, -1.0), ldr_to_hdr(ldr, 0.0), atol=1e-6)
    assert torch.allclose(up, ldr * 2 ** (-1 / 2.2))
    assert reexpose(torch.ones(1, 3, 2, 2), -2.0, 2.0).max() == 1  # clipped
    assert torch.allclose(hdr_scale(torch.tensor([[1.5, -1.5, 1.5]])).flatten(), torch.tensor([2**-1.5]))


def test_well_exposed_mask_equation5():
    vals = torch.tensor([0.0, 0.075, 0.15, 0.5, 0.9, 0.95, 1.0])
    ldr = vals.view(1, 1, 1, -1).expand(1, 3, 1, -1)
    low = well_exposed_mask(ldr, -1.5, torch.tensor([[1.5, -1.5, 1.5]]))
    assert torch.allclose(low.flatten(), torch.tensor([0.0, 0.25, 1, 1, 1, 1, 1]))
    high = well_exposed_mask(ldr, 1.5, torch.tensor([[-1.5, 1.5, -1.5]]))
    assert torch.allclose(high.flatten(), torch.tensor([1, 1, 1, 1, 1, 0.25, 0.0]))
    mid = well_exposed_mask(ldr, 0.0, torch.tensor([[-2.0, 0.0, 2.0]]), soft=False)
    assert torch.equal(mid.flatten(), torch.tensor([0.0, 0, 1, 1, 1, 0, 0]))
    # a pixel is dark only if all channels are, saturated if any channel is
    px = torch.tensor([0.05, 0.05, 0.5]).view(1, 3, 1, 1)
    assert well_exposed_mask(px, -1.5, torch.tensor([[1.5, -1.5]])).item() == 1
    assert well_exposed_mask(px, -1.5, torch.tensor([[1.5, -1.5]]), per_channel=True).flatten()[0] < 1


@dataclass(frozen=True)
class _Inner(ConfigMixin):
    a: int = 1
    sizes: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class _Outer(ConfigMixin):
    inner: _Inner = _Inner()
    b: float = 0.5


def test_config_from_dict_roundtrip_and_unknown_keys():
    cfg = _Outer(inner=_Inner(a=3, sizes=(4, 5)), b=2.0)
    assert _Outer.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        _Outer.from_dict({"bb": 1})
    with pytest.raises(ValueError, match="unknown keys"):
        _Outer.from_dict({"inner": {"a": 1, "typo": 2}})
