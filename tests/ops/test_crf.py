import json

import numpy as np
import pytest
import torch

from vs_hdrvid.ops.crf import CRF, estimate_crf_debevec, gamma_to_linear, linear_to_gamma

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def film_inverse(L: np.ndarray, p: float, k: float) -> np.ndarray:
    """Inverse of the S-shaped (in log exposure) response ``f(x) = (1 + k) x^p / (x^p + k)``."""
    return (k * L / (1 + k - L)) ** (1 / p)


def film_response(x: np.ndarray, p: float, k: float) -> np.ndarray:
    y = np.clip(x, 0, 1) ** p
    return (1 + k) * y / (y + k)


@pytest.fixture
def bracket():
    """Five 8-bit exposures of a static HDR scene through a per-channel S-curve response."""
    rng = np.random.default_rng(3)
    h, w = 96, 128
    hdr = np.exp(rng.uniform(np.log(2e-3), np.log(4.0), (h, w, 3)))
    params = [(0.9, 0.3), (1.1, 0.25), (0.8, 0.4)]
    evs = [-3.0, -1.5, 0.0, 1.5, 3.0]
    frames = []
    for ev in evs:
        ldr = np.stack([film_response(hdr[..., c] * 2**ev, *params[c]) for c in range(3)], -1)
        ldr = ldr + rng.normal(0, 0.5 / 255, ldr.shape)
        frames.append(np.clip(np.rint(ldr * 255), 0, 255).astype(np.uint8))
    return frames, evs, params


# ---------------------------------------------------------------------------------- gamma
@pytest.mark.parametrize("device", DEVICES)
def test_gamma_functions(device):
    x = torch.linspace(0, 1, 11, device=device)
    torch.testing.assert_close(gamma_to_linear(linear_to_gamma(x)), x, atol=1e-6, rtol=0)
    assert linear_to_gamma(torch.tensor([2.0, -1.0])).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="gamma"):
        gamma_to_linear(x, 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_crf_gamma_lut(device, dtype):
    crf = CRF.gamma(2.2)
    L = torch.rand(2, 3, 17, 19, device=device).to(dtype)
    lin = crf.to_linear(L)
    assert lin.shape == L.shape and lin.dtype == dtype and lin.device == L.device
    tol = 2e-3 if dtype == torch.float16 else 1e-5
    torch.testing.assert_close(lin.float(), L.float().pow(2.2), atol=tol, rtol=0)
    back = crf.to_ldr(lin)
    torch.testing.assert_close(back.float(), L.float(), atol=5 * tol, rtol=0)
    # unbatched input and out-of-range values
    torch.testing.assert_close(crf.to_linear(L[0]), lin[0])
    edge = torch.tensor([-0.5, 0.0, 1.0, 3.0], device=device).view(1, 1, 1, 4).expand(1, 3, 1, 4).to(dtype)
    torch.testing.assert_close(crf.to_linear(edge).float(), torch.tensor([0.0, 0, 1, 1], device=device)
                               .expand(1, 3, 1, 4), atol=0, rtol=0)
    torch.testing.assert_close(crf.to_ldr(edge).float(), crf.to_linear(edge).float())


def test_crf_per_channel_and_broadcast():
    z = np.linspace(0, 1, 64)
    crf = CRF(np.stack([z, z**2, z**3]))
    L = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    out = crf.to_linear(L)[0, :, 0, 0]
    torch.testing.assert_close(out, torch.tensor([0.5, 0.25, 0.125], dtype=torch.float64), atol=2e-4, rtol=0)
    torch.testing.assert_close(crf.to_ldr(crf.to_linear(L)), L)
    grey = CRF(z**2)
    assert grey.channels == 1
    for c in (1, 3):
        x = torch.rand(1, c, 4, 4, dtype=torch.float64)
        torch.testing.assert_close(grey.to_ldr(grey.to_linear(x)), x)
    with pytest.raises(ValueError, match="channels"):
        crf.to_linear(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="floating"):
        crf.to_linear(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))


def test_crf_flat_stretch_inverts_to_its_start():
    crf = CRF([0.0, 0.5, 0.5, 1.0])
    x = torch.tensor([0.25, 0.5, 0.75]).view(1, 1, 1, 3)
    torch.testing.assert_close(crf.to_ldr(x).flatten(), torch.tensor([1 / 6, 1 / 3, 5 / 6]))


# ------------------------------------------------------------------------------------ files
def test_save_and_load(tmp_path):
    crf = CRF.gamma(2.4, n=256)
    path = tmp_path / "crf.json"
    crf.save(path)
    obj = json.loads(path.read_text())
    assert obj["kind"] == "lut" and len(obj["inverse"]) == 3 and len(obj["inverse"][0]) == 256
    assert path.read_text().count("\n") > 5  # human-readable, one row per line
    back = CRF.from_file(path)
    np.testing.assert_allclose(back.inverse, crf.inverse, atol=1e-9)
    assert back.source == "gamma 2.4"


@pytest.mark.parametrize("content,match", [
    ('{"kind": "lut", "inverse": [[0, 0.6, 0.4, 1], [0, 0.2, 0.5, 1], [0, 0.1, 0.5, 1]]}', "monotone"),
    ('{"kind": "lut", "inverse": [[0, 0.5, 1], [0, 0.5, 1]]}', "shape"),
    ('{"kind": "lut", "inverse": [[0, NaN, 1], [0, 0.5, 1], [0, 0.5, 1]]}', "NaN"),
    ('{"kind": "lut", "inverse": [[0, 0.5, 0.9], [0, 0.5, 0.9], [0, 0.5, 0.9]]}', "f\\^-1\\(1\\) = 1"),
    ('{"kind": "lut", "inverse": [[0, 0.5], [0, 0.5, 1], [0, 1]]}', "number lists"),
    ('{"kind": "gamma", "inverse": []}', "kind 'lut'"),
    ("not json", "JSON"),
])
def test_from_file_rejects_malformed(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        CRF.from_file(path)


def test_constructor_rejects_bad_tables():
    with pytest.raises(ValueError, match="shape"):
        CRF(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="gamma"):
        CRF.gamma(-1.0)


# ---------------------------------------------------------------------------------- Debevec
def test_debevec_recovers_s_curve(bracket):
    frames, evs, params = bracket
    crf = estimate_crf_debevec(frames, evs, seed=0)
    assert crf.inverse.shape == (3, 256)
    assert crf.inverse[:, 0].tolist() == [0.0] * 3 and crf.inverse[:, -1].tolist() == [1.0] * 3
    assert (np.diff(crf.inverse, axis=1) >= 0).all()
    z = np.linspace(0, 1, 256)
    well = (z >= 0.1) & (z <= 0.9)
    for c in range(3):
        truth = film_inverse(z, *params[c])
        rel = np.abs(crf.inverse[c][well] / truth[well] - 1)
        assert rel.max() < 0.04, f"channel {c}: max relative error {rel.max():.3f}"
    # deterministic for a seed; float input in [0, 1] gives the same answer as uint8
    again = estimate_crf_debevec([f / 255.0 for f in frames], evs, seed=0)
    np.testing.assert_allclose(again.inverse, crf.inverse, atol=1e-9)
    # the estimate is usable as a CRF: linearising a bracket frame recovers the scene ratios
    lin = crf.to_linear(torch.from_numpy(frames[2]).permute(2, 0, 1)[None].double() / 255)
    assert lin.shape == (1, 3, 96, 128)


def test_debevec_exceptions(bracket):
    frames, evs, _ = bracket
    with pytest.raises(ValueError, match="one EV per image"):
        estimate_crf_debevec(frames, evs[:-1])
    with pytest.raises(ValueError, match="differ"):
        estimate_crf_debevec(frames[:2], [0.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        estimate_crf_debevec([frames[0], frames[1][:10]], evs[:2])
    with pytest.raises(ValueError, match="well exposed"):
        estimate_crf_debevec([np.full((8, 8, 3), 255, np.uint8)] * 2, [0.0, 1.0])
