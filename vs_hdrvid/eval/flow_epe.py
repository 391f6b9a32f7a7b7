"""``vs-hdrvid eval-flow``: end-point error of the flows a CoarseNet aligns with, against ground truth.

For every reference frame of a synthetic preset whose CoarseNet window lies inside the scene, the
flows ``t -> t+d`` to each neighbour of the window (``d = +-1``, and ``+-2`` for three exposures)
are scored against the generator's exact flows, in pixels:

- ``dis``: the classical flows CoarseNet starts from (:meth:`SceneArrays.classical_flows`, the
  DIS flows its training data carries, on the exposure-normalised frames);
- ``zero``: no motion (how much motion there is);
- a flow network correcting DIS: ``coarse`` (the shipped ``coarse_<n>exp`` when it has one, or the
  weights folder of ``--weights``) or ``ckpt:PATH`` (a training run's ``ckpt.pt``).

Pixels count where the ground truth is defined (not occluded at ``t+d``); ``saturated`` keeps those
where the reference or its match in the neighbour is clipped (a channel at or above 250/255 of the
LDR frame), where DIS has nothing to match. Figures are means over the pooled pixels of a scene
group (``all``, ``2-exp``, ``clean``, ``motion large``, ...).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vs_hdrvid.eval.scenes import list_scenes, load_scene
from vs_hdrvid.ops.warp import flow_warp

__all__ = ["SATURATED", "flow_methods", "evaluate_flows", "add_cli", "run_cli"]

#: an LDR channel at or above this is clipped
SATURATED = 250 / 255


def _coarse_from_checkpoint(path: Path):
    from vs_hdrvid.models.coarsenet import CoarseNet, CoarseNetConfig

    state = torch.load(path, map_location="cpu", weights_only=False)
    if "coarse" not in state.get("nets", {}):
        raise ValueError(f"eval-flow: {path} holds no CoarseNet (nets: {sorted(state.get('nets', {}))})")
    net = CoarseNet(CoarseNetConfig.from_dict(state["net_configs"]["coarse"]))
    net.load_state_dict(state["nets"]["coarse"])
    return net.eval()


def flow_methods(specs: list[str], exposures: int, weights: str | None = None) -> dict:
    """``{spec: CoarseNet | None}`` for method specs (None: ``dis`` or ``zero``).

    Raises:
        ValueError: an unknown spec, or a network without a flow network or of another pattern.
    """
    from vs_hdrvid import weights as W

    out = {}
    for spec in specs:
        if spec in ("dis", "zero"):
            out[spec] = None
            continue
        if spec == "coarse":
            net, _ = W.load(f"coarse-{exposures}exp", folder=Path(weights) if weights else W.WEIGHTS_DIR)
        elif spec.startswith("ckpt:"):
            net = _coarse_from_checkpoint(Path(spec[5:]))
        else:
            raise ValueError(f"eval-flow: unknown method {spec!r}; use dis, zero, coarse or ckpt:PATH")
        if net.config.num_exposures != exposures:
            raise ValueError(f"eval-flow: {spec} is a {net.config.num_exposures}-exposure CoarseNet, "
                             f"not {exposures}-exposure")
        if net.flownet is None:
            raise ValueError(f"eval-flow: {spec} has no flow network (flow_refine=False: it uses the DIS "
                             "flows as they are, which the method dis scores)")
        out[spec] = net
    return out


def _saturated(t: int, offsets: list[int], gt: Tensor, ldrs: Tensor) -> Tensor:
    """``(K, 1, H, W)``: 1 where the reference or its match in the neighbour is clipped."""
    ref = ldrs[t].amax(0, keepdim=True) >= SATURATED  # (1, H, W)
    nbrs = torch.stack([ldrs[t + d] for d in offsets])  # (K, 3, H, W)
    match = flow_warp(nbrs, gt).amax(1, keepdim=True) >= SATURATED  # the neighbour at p + flow(p)
    return (ref[None] | match).float()


@torch.no_grad()
def evaluate_flows(root: str | Path, preset: str, exposures: int, methods: dict, scenes=None,
                   progress: bool = True) -> dict:
    """EPE of each method per scene group: ``{"groups": {group: {method: {"epe", "epe_saturated",
    "pixels", "pixels_saturated"}}}, "scenes": {...}}``."""
    from vs_hdrvid.train.data import SceneArrays

    ids = list_scenes(root, preset)
    if isinstance(scenes, int):
        ids = ids[:scenes]
    elif scenes:
        ids = [s for s in ids if s in set(scenes)]
    reach = exposures - 1
    offsets = [d for d in range(-reach, reach + 1) if d]
    sums: dict[str, dict[str, np.ndarray]] = {}
    per_scene = {}
    for sid in ids:
        scene = load_scene(root, preset, sid)
        if len(scene.pattern) != exposures:
            continue
        arrays = SceneArrays(scene.path, flows=True)
        ldrs = torch.from_numpy(arrays.ldr.astype(np.float32) / arrays.scale)
        evs = torch.from_numpy(arrays.evs)
        init_all, conf_all = arrays.classical_flows(reach)
        acc = {m: np.zeros(4) for m in methods}  # error sum, pixels, saturated error sum, saturated pixels
        for t in range(reach, arrays.num_frames - reach):
            gt_np, valid_np = arrays.flows_from(t, offsets)
            gt, defined = torch.from_numpy(gt_np), torch.from_numpy(valid_np)  # not occluded at t+d
            sat = defined * _saturated(t, offsets, gt, ldrs)
            init = torch.from_numpy(init_all[t])  # (K, 2, H, W), time order
            for name, net in methods.items():
                if name == "zero":
                    pred = torch.zeros_like(gt)
                elif net is None:
                    pred = init
                else:
                    win = ldrs[t - reach:t + reach + 1][None]
                    conf = torch.from_numpy(conf_all[t].astype(np.float32))[None]
                    pred = net.flows(win, evs[t - reach:t + reach + 1][None], init[None], conf)[0]
                err = (pred - gt).pow(2).sum(1, keepdim=True).sqrt()
                acc[name] += [float((err * defined).sum()), float(defined.sum()),
                              float((err * sat).sum()), float(sat.sum())]
        per_scene[sid] = {m: _figures(a) for m, a in acc.items()}
        for g in scene.groups:
            for m, a in acc.items():
                sums.setdefault(g, {}).setdefault(m, np.zeros(4))
                sums[g][m] += a
        if progress:
            print(f"eval-flow: {sid}: " + ", ".join(f"{m} {v['epe']:.3f}" for m, v in per_scene[sid].items()),
                  file=sys.stderr)
    if not per_scene:
        raise ValueError(f"eval-flow: no {exposures}-exposure scenes in {Path(root) / preset}")
    return {"preset": preset, "exposures": exposures, "saturated_level": SATURATED,
            "groups": {g: {m: _figures(a) for m, a in ms.items()} for g, ms in sums.items()}, "scenes": per_scene}


def _figures(a: np.ndarray) -> dict:
    return {"epe": a[0] / max(a[1], 1.0), "pixels": int(a[1]),
            "epe_saturated": a[2] / a[3] if a[3] > 0 else None, "pixels_saturated": int(a[3])}


def markdown(res: dict) -> str:
    """One table: a row per method, EPE and saturated EPE per group."""
    groups = sorted(res["groups"], key=lambda g: (g != "all", g))
    methods = list(res["groups"]["all"])
    head = "| method | " + " | ".join(f"{g} | {g} sat." for g in groups) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(groups)]
    for m in methods:
        cells = []
        for g in groups:
            f = res["groups"][g][m]
            cells += [f"{f['epe']:.3f}", "-" if f["epe_saturated"] is None else f"{f['epe_saturated']:.3f}"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_cli(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval-flow", help="end-point error of DIS and of the trained flow network against ground-truth flow",
        description=__doc__.split("\n\n")[1])
    p.add_argument("--root", default="data/synth", help="dataset root (default: data/synth)")
    p.add_argument("--preset", default="test", help="dataset preset (default: test)")
    p.add_argument("--exposures", type=int, choices=(2, 3), default=2)
    p.add_argument("--methods", default="zero,dis,coarse",
                   help="comma-separated: dis, zero, coarse (the shipped or --weights CoarseNet), ckpt:PATH")
    p.add_argument("--weights", default=None, help="weights folder for the method coarse (default: weights/)")
    p.add_argument("--scenes", type=int, default=None, help="the first N scenes only")
    p.add_argument("--out", default=None, help="write results.json and results.md to this folder")
    p.add_argument("--quiet", action="store_true", help="no per-scene lines on stderr")
    return p


def run_cli(args: argparse.Namespace) -> int:
    from vs_hdrvid.weights import WeightsError

    try:
        methods = flow_methods([m.strip() for m in args.methods.split(",") if m.strip()], args.exposures,
                               args.weights)
        res = evaluate_flows(args.root, args.preset, args.exposures, methods, args.scenes, not args.quiet)
    except (ValueError, FileNotFoundError, WeightsError) as e:
        print(f"vs-hdrvid eval-flow: {e}", file=sys.stderr)
        return 2
    table = markdown(res)
    print(f"EPE in pixels, {args.preset} preset, {args.exposures} exposures (sat.: clipped in either frame)")
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(res, indent=1))
        (out / "results.md").write_text(table + "\n")
    return 0
