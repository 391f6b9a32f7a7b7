"""WindowDataset: windows, shapes, determinism and flows that stay consistent under augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vs_hdrvid.ops.warp import flow_warp
from vs_hdrvid.synth.augment import Augment
from vs_hdrvid.train.data import SceneArrays, WindowDataset, window_length


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The micro preset (two 64x48 two-exposure scenes of 6 frames), shared by the session."""
    from vs_hdrvid.synth import generate

    out = tmp_path_factory.getbasetemp() / "train-synth"
    generate("micro", root=out, progress=False)  # complete scenes are kept, not regenerated
    return out


def test_window_lengths():
    assert [window_length(k, 2) for k in ("flow", "coarse", "refine")] == [3, 3, 5]
    assert [window_length(k, 3) for k in ("flow", "coarse", "refine")] == [5, 5, 7]
    with pytest.raises(ValueError):
        window_length("bogus", 2)


@pytest.mark.parametrize("kind, t_len, g", [("coarse", 3, 1), ("refine", 5, 3), ("flow", 3, 1)])
def test_sample_shapes(root, kind, t_len, g):
    ds = WindowDataset(root, "micro", kind, 2, patch=32, seed=1)
    s = ds[7]
    assert s["ldrs"].shape == (t_len, 3, 32, 32) and s["ldrs"].dtype == torch.float32
    assert 0 <= float(s["ldrs"].min()) and float(s["ldrs"].max()) <= 1
    assert s["evs"].shape == (t_len,) and s["gt"].shape == (g, 3, 32, 32)
    assert set(s["evs"].tolist()) == {float(e) for e in ds.scene(0).pattern} or len(set(s["evs"].tolist())) == 2
    assert float(s["h_sat"]) == pytest.approx(2.0 ** -float(s["evs"].min()))
    if kind == "flow":
        assert s["flows"].shape == (2, 2, 32, 32) and s["flow_valid"].shape == (2, 1, 32, 32)
    # references leave room for the window: 6 frames -> t in [r, 6 - r)
    r = t_len // 2
    assert {it.t for it in ds.items} == set(range(r, 6 - r))


def test_training_samples_are_a_function_of_seed_and_index(root):
    a = WindowDataset(root, "micro", "coarse", 2, patch=32, seed=3)
    b = WindowDataset(root, "micro", "coarse", 2, patch=32, seed=3)
    for i in (0, 5, 123):
        assert all(torch.equal(a[i][k], b[i][k]) for k in a[i])
    assert not torch.equal(a[0]["ldrs"], a[1]["ldrs"])


def test_validation_crops_are_fixed_and_shared_by_stages(root):
    ref = window_length("refine", 2)
    v1 = WindowDataset(root, "micro", "coarse", 2, patch=32, train=False, ref_window=ref, val_windows=2)
    v2 = WindowDataset(root, "micro", "refine", 2, patch=32, train=False, ref_window=ref, val_windows=2)
    assert len(v1) == len(v2) == 4
    for i in range(len(v1)):
        a, b = v1[i], v2[i]
        assert torch.equal(a["ldrs"], b["ldrs"][1:4]) and torch.equal(a["gt"][0], b["gt"][1])
        assert torch.equal(a["ldrs"], v1[i]["ldrs"])  # no augmentation, no noise


def _warp_error(nbr, ref, flow, valid):
    w = flow_warp(torch.from_numpy(np.ascontiguousarray(nbr))[None], torch.from_numpy(np.ascontiguousarray(flow))[None])[0]
    err = (w - torch.from_numpy(np.ascontiguousarray(ref))).abs().mean(0)
    v = torch.from_numpy(np.ascontiguousarray(valid, dtype=np.float32))
    return float((err * v).sum() / v.sum())


@pytest.mark.parametrize("aug", [Augment(hflip=True), Augment(vflip=True), Augment(rot90=1),
                                 Augment(hflip=True, rot90=3, perm=(2, 0, 1))])
def test_augmented_flow_still_warps(root, aug):
    """Warping the augmented neighbour with the augmented flow gives the augmented reference."""
    sc = WindowDataset(root, "micro", "flow", 2, patch=32).scene(0)
    t = 2
    gt = sc.gt.astype(np.float32) / sc.gt.astype(np.float32).max()
    for d in (1, -1, 2):
        flow, valid = sc.flows_from(t, [d])
        flow, valid = flow[0], valid[0, 0] * (1 - (sc.occ_fwd if d > 0 else sc.occ_bwd)[t])
        base = _warp_error(gt[t + d], gt[t], flow, valid)
        still = _warp_error(aug.image(gt[t + d]), aug.image(gt[t]), aug.flow(flow), aug.mask(valid))
        moved_only = _warp_error(aug.image(gt[t + d]), aug.image(gt[t]), aug._geom(flow), aug.mask(valid))
        zero = _warp_error(gt[t + d], gt[t], np.zeros_like(flow), valid)
        assert base < 0.5 * zero  # the ground truth (and the composed +-2 flow) aligns the frames
        assert still == pytest.approx(base, rel=0.05, abs=1e-4)
        if np.abs(flow).max() > 0.5 and (aug.hflip or aug.vflip or aug.rot90):
            assert moved_only > still  # moving the field without turning its vectors is wrong


def test_dataset_applies_the_augmentation_to_flows(root):
    ds = WindowDataset(root, "micro", "flow", 2, patch=32, seed=0, tone=False, noise=False)
    item = ds.items[0]
    aug = Augment(hflip=True, rot90=1, perm=(1, 2, 0))
    plain = ds._sample(item, 4, 8, None, None)
    augd = ds._sample(item, 4, 8, aug, np.random.default_rng(0))
    assert torch.allclose(augd["flows"], torch.from_numpy(aug.flow(plain["flows"].numpy())))
    assert torch.allclose(augd["ldrs"], torch.from_numpy(aug.image(plain["ldrs"].numpy())))
    assert torch.allclose(augd["gt"], torch.from_numpy(aug.image(plain["gt"].numpy())))


def test_noise_only_on_lower_exposures(root):
    ds = WindowDataset(root, "micro", "coarse", 2, patch=32)
    ldrs = np.full((3, 3, 8, 8), 0.5, np.float32)
    out = ds._add_noise(ldrs, np.array([-1.5, 1.5, -1.5], np.float32), np.random.default_rng(0))
    assert not np.array_equal(out[0], ldrs[0]) and not np.array_equal(out[2], ldrs[2])
    assert np.array_equal(out[1], ldrs[1])


@pytest.mark.parametrize("noise, clean", [
    ({}, True), ({"sigma": 0.0}, True), ({"sigma": 0.002}, False),
    ({"model": "heteroscedastic", "lambda_shot": 2e-4, "lambda_read": 1e-6}, False),
    ({"model": "poisson-gaussian-bayer", "electrons_full_scale": 2000.0, "read_std": 0.002}, False),
])
def test_clean_reads_every_noise_model(noise, clean):
    """Scenes with rendered noise get no extra training noise, whichever noise model made them."""
    scene = SceneArrays.__new__(SceneArrays)  # only the metadata matters here
    scene.meta = {"noise": noise}
    assert scene.clean is clean
