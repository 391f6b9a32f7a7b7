"""The training loop shared by every stage: schedule, logging, validation, checkpoints, shipping.

A run lives in ``<runs_dir>/<out_name>/``: ``ckpt.pt`` (networks, their configs, optimiser, step,
RNG states, history, wall time; written every ``ckpt_every`` steps and when the run stops),
``log.jsonl`` (one record per log line and validation) and ``curve.png``. A run stops cleanly at
``steps``, after ``max_minutes``, or on SIGINT/SIGTERM, always writing a final checkpoint;
``resume`` continues it. At the end the stage's networks are written to the weights folder with
:func:`vs_hdrvid.weights.save` and described in ``MANIFEST.json`` (config, sha256, parameters,
recipe, validation metrics, deviations from the paper), and the curve is copied to
``<weights>/curves/<file>.png``.

Validation is deterministic: fixed crops of the validation preset (no augmentation), networks in
eval mode; the reference-only linearisation is scored on the same crops.
"""
from __future__ import annotations

import json
import logging
import math
import platform
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from vs_hdrvid import weights as W
from vs_hdrvid.bridge import resolve_device
from vs_hdrvid.train.config import MIN_LR, TrainConfig
from vs_hdrvid.train.data import WindowDataset, prepare_classical_flows, window_length
from vs_hdrvid.train.fastpath import FastPath
from vs_hdrvid.train.stages import Stage, make_stage

__all__ = ["train", "DEVIATIONS", "LOSSES", "make_optimizer", "train_step", "make_loader", "datasets"]

log = logging.getLogger("vs_hdrvid.train")

LOSSES = {
    "spynet": "EPE of the flow network's t->neighbour flows against ground truth (non-occluded for composed +-2 flows)",
    "coarse": "mu-law L1 (Chen et al. eq. 1, mu=5000) on clip(H/H_sat, 0, 1); for blend='merge' the mean over "
              "crops of log(1e-4 + each crop's mu-law L1) (losses.log_mu_l1)",
    "refine": "eq. 6 L1 normalised by the badly exposed area (floored at 5% of the pixels) + perc_weight x (multi-scale gradient L1 + (1 - SSIM)) "
              "in the mu-law domain, substituting the VGG16 perceptual loss",
    "finetune": "as refine, CoarseNet and RefineNet trained together",
    "dealthdr": "mu-law L1 (DeAltHDR eq. 9) + perc_weight x (multi-scale gradient L1 + (1 - SSIM)) in the mu-law "
                "domain, substituting the VGG16 loss, + flow_weight x EPE of the SpyNet's t->neighbour flows",
}

DEVIATIONS = [
    "Synthetic training data from vs-hdrvid synth (blender-data CC0 panoramas with moving textured layers), "
    "not the 21 HDR videos + Vimeo-90K of Chen et al. 5.1.",
    "VGG16 perceptual loss replaced by multi-scale gradient L1 + (1 - SSIM) in the mu-law domain "
    "(no ImageNet weights); weight given in recipe.perc_weight.",
    "Flow network pretrained on ground-truth flow (EPE) before end-to-end training; the paper trains CoarseNet "
    "end to end only. For three exposures the t->t+-2 flows are composed from one-frame steps.",
    "Iterations instead of epochs; the learning rate halves every lr_halve_every steps (paper: every 5 of 10 epochs).",
]

REFINE_RESIDUAL_DEVIATION = (
    "RefineNet's reconstruction predicts a zero-initialised mu-law residual over the reference's coarse HDR "
    "(config.coarse_residual) instead of the paper's sigmoid regression, so training starts from CoarseNet's "
    "output: a CPU budget does not bring a from-scratch head back up to CoarseNet's quality.")

COARSE_MERGE_DEVIATION = (
    "CoarseNet corrects the classical answer instead of estimating from scratch (config.blend='merge'): "
    "its window is aligned by the DIS flows of hv.classical_flow (flow_refine: corrected by a SpyNet whose "
    "zero-initialised level outputs refine them), and the weight network predicts, with a zero-initialised "
    "head, a per-channel log-weight residual over the weight-free merge's own weights (hat, exposure, ghost "
    "rejection) and a mu-law residual over the blend. At step 0 it equals hv.merge with the same flows exactly; "
    "a CPU budget of a few thousand steps cannot teach a network from scratch what DIS and the merge know. "
    "No batch norm in that weight network (small-batch statistics move a correction that must start at zero), "
    "no tone perturbation of the reference (it makes the classical base wrong in training only), and the "
    "paper's mask keeping the reference's own radiance is the merge's weighting instead. Loss: the mean over "
    "crops of the log of each crop's mu-law L1, so that clean crops (errors a tenth of noisy ones) count alike.")

DEALTHDR_DEVIATIONS = [
    "Synthetic training data from vs-hdrvid synth's DeAltHDR recipes (blender-data CC0 panoramas, moving layers, "
    "sub-frame blur, Eq. A/B noise), not the paper's 176 DJI Pocket 3 scenes.",
    "VGG16 perceptual loss replaced by multi-scale gradient L1 + (1 - SSIM) in the mu-law domain (no ImageNet "
    "weights); weight given in recipe.perc_weight.",
    "SpyNet is trained with the network (plus an EPE term against the synthetic ground-truth flow) instead of "
    "starting from ImageNet-free pretrained SpyNet weights, which this project does not use.",
    "FGMA attends to a window around each masked query's flow target (window side in config.window) with a learned "
    "relative-position bias; the paper does not state the key extent. Masks of coarser levels average D first.",
    "Decoder block count (config.dec_blocks) and the mu-law global residual over the centre frame are this "
    "project's choices where the paper gives no number.",
]


def _dataset(cfg: TrainConfig, kind: str, preset: str, train: bool, classical_flow: bool = False) -> WindowDataset:
    def make() -> WindowDataset:
        return WindowDataset(cfg.root, preset, kind, cfg.exposures, patch=cfg.patch if train else cfg.val_patch,
                             classical_flow=classical_flow,
                             train=train, seed=cfg.seed, ref_window=None if train else window_length("refine", cfg.exposures),
                             val_windows=cfg.val_windows, tone=cfg.tone and kind != "dealthdr" and not classical_flow,
                             noise=cfg.noise)
    try:
        return make()
    except FileNotFoundError:
        if not cfg.synth_if_missing or (Path(cfg.root) / preset).is_dir():
            raise
    from vs_hdrvid.synth import generate
    log.info("train: %s/%s is missing; synthesising it first", cfg.root, preset)
    generate(preset, root=cfg.root, workers=max(1, cfg.workers))
    return make()


def datasets(cfg: TrainConfig, stage: Stage, val: bool = True) -> tuple[WindowDataset, ...]:
    """The training and (with ``val``) validation datasets of a stage's run, their classical flows
    computed with ``max(1, cfg.workers)`` processes where they are not cached yet."""
    out = (_dataset(cfg, stage.kind, cfg.preset, train=True, classical_flow=stage.classical_flow),)
    if val:
        out += (_dataset(cfg, stage.kind, cfg.val_preset, train=False, classical_flow=stage.classical_flow),)
    if stage.classical_flow:
        t0 = time.monotonic()
        done = sum(prepare_classical_flows(ds.dirs, cfg.exposures - 1, max(1, cfg.workers)) for ds in out)
        if done:
            log.info("train: classical flows of %d scenes computed in %.0f s", done, time.monotonic() - t0)
    return out


def make_optimizer(cfg: TrainConfig, stage: Stage, step: int) -> torch.optim.Optimizer:
    """Adam (Chen et al.) or AdamW (DeAltHDR) over the stage's parameter groups."""
    groups = stage.param_groups()
    if cfg.cosine:
        return torch.optim.AdamW(groups, lr=cfg.lr_at(step), betas=(0.9, 0.999))
    return torch.optim.Adam(groups, lr=cfg.lr_at(step))


def make_loader(cfg: TrainConfig, ds: WindowDataset, step: int, device: torch.device) -> DataLoader:
    """Samples ``step * batch ..`` of the run's deterministic sequence (a resumed run continues it)."""
    if cfg.workers == 0:
        ds.preload()
    return DataLoader(ds, batch_size=cfg.batch, sampler=range(step * cfg.batch, cfg.steps * cfg.batch),
                      num_workers=cfg.workers, drop_last=True, pin_memory=device.type == "cuda",
                      persistent_workers=False,
                      # its own generator: creating the iterator must not draw from the global RNG
                      # that the checkpoint restores (a resumed run continues the same sequence)
                      generator=torch.Generator().manual_seed(cfg.seed + step))


def train_step(stage: Stage, opt: torch.optim.Optimizer, batch: dict, lr: float, fast: FastPath
               ) -> tuple[Tensor, dict[str, float]]:
    """One optimiser step of ``stage`` on ``batch`` (already on the stage's device)."""
    for g in opt.param_groups:
        g["lr"] = lr * g["lr_scale"]
    with fast.autocast(stage.device):
        loss, parts = stage.loss(batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), parts


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def validate(stage: Stage, val: WindowDataset, batch: int) -> dict[str, float]:
    """Mean of each validation value over the fixed crops, plus per reference exposure."""
    for net in stage.nets.values():
        net.eval()
    values: dict[str, list[Tensor]] = {}
    ref_ev = []
    loader = DataLoader(val, batch_size=batch, shuffle=False, num_workers=0,
                        generator=torch.Generator())  # leaves the global RNG alone (resume-exact)
    for b in loader:
        b = _to(b, stage.device)
        for k, v in stage.validate(b).items():
            values.setdefault(k, []).append(v.float().cpu())
        ref_ev.append(b["evs"][:, b["evs"].shape[1] // 2].cpu())
    for name, net in stage.nets.items():
        net.train(name in stage.trained)
    out = {k: float(torch.cat(v).mean()) for k, v in values.items()}
    evs, metric = torch.cat(ref_ev), torch.cat(values[stage.metric])
    for ev in sorted(set(evs.tolist())):
        out[f"{stage.metric}_ref_ev{ev:+g}"] = float(metric[evs == ev].mean())
    return out


def _plot(history: dict, path: Path, title: str, metric: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=80)
    if history["train"]:
        steps, loss = np.array(history["train"]).T
        a.plot(steps, loss, lw=0.5, alpha=0.4, color="C0")
        k = max(1, len(loss) // 30)
        if len(loss) >= k:
            a.plot(steps[k - 1:], np.convolve(loss, np.ones(k) / k, "valid"), color="C0", label=f"mean of {k}")
            a.legend(fontsize=7)
    a.set(xlabel="step", ylabel="train loss", title=title)
    a.set_yscale("log")
    if history["val"]:
        vs = [v["step"] for v in history["val"]]
        b.plot(vs, [v[metric] for v in history["val"]], "o-", ms=3, label="network")
        for extra, style in (("val_psnr_mu_reference_only", "x--"), ("val_psnr_mu_coarse", "s:"), ("val_epe_zero_flow", "x--"),
                             ("val_psnr_mu_s0", "v:"), ("val_psnr_mu_sinf", "^:")):
            if extra in history["val"][-1]:
                b.plot(vs, [v.get(extra, math.nan) for v in history["val"]], style, label=extra.replace("val_", ""))
        b.legend(fontsize=7)
    b.set(xlabel="step", ylabel=metric, title="validation (fixed crops)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _save_ckpt(path: Path, stage: Stage, opt: torch.optim.Optimizer, step: int, history: dict,
               wall: float, cfg: TrainConfig, notes: list[str], previous: dict) -> None:
    state = {"config": cfg.to_dict(), "step": step, "wall_time_s": wall, "history": history,
             "nets": {k: v.state_dict() for k, v in stage.nets.items()},
             "net_configs": {k: v.config.to_dict() for k, v in stage.nets.items()},
             "optimizer": opt.state_dict(), "rng": _rng_state(), "init": notes, "previous": previous}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.part")
    torch.save(state, tmp)
    tmp.replace(path)


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one training stage; returns a summary dict.

    Returns:
        ``{"step", "stopped", "wall_time_s", "val": {...}, "shipped": [files], "run_dir"}``.
    """
    device = resolve_device(cfg.device)  # ValueError names the device when CUDA is missing
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    run_dir = Path(cfg.runs_dir) / cfg.out_name
    ckpt_path = run_dir / "ckpt.pt"
    stage = make_stage(cfg, device)
    step, wall0, history, resumed_from = 0, 0.0, {"train": [], "val": []}, None
    ckpt = None
    if cfg.resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"train: --resume but no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        keys = ("stage", "exposures", "blend", "flow_refine", "model", "batch", "patch")
        was = {k: ckpt["config"].get(k, TrainConfig.__dataclass_fields__[k].default) for k in keys}
        now = {k: getattr(cfg, k) for k in keys}
        if was != now:
            diff = ", ".join(f"{k} {was[k]!r} (now {now[k]!r})" for k in keys if was[k] != now[k])
            raise ValueError(f"train: {ckpt_path} is another run: {diff}; resume with its settings or "
                             f"start a new run with --out-name")
        stage.rebuild(ckpt["net_configs"])
        for k, net in stage.nets.items():
            net.load_state_dict(ckpt["nets"][k])
        step, wall0, history = ckpt["step"], ckpt["wall_time_s"], ckpt["history"]
        stage.init_notes, stage.previous = ckpt.get("init", []), ckpt.get("previous", {})
        resumed_from = f"{ckpt_path} (step {step})"
    else:
        stage.init()
    stage.to()
    fast = FastPath.baseline() if cfg.fp32 else FastPath.detect(device, cfg.compile, cfg.stage)
    fast.prepare(stage.nets, stage.trained)
    opt = make_optimizer(cfg, stage, step)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        _set_rng_state(ckpt["rng"])

    train_ds, val_ds = datasets(cfg, stage)
    loader = make_loader(cfg, train_ds, step, device)
    log.info("train %s: %d-exposure, %d windows from %d scenes, %d val crops, device %s, fast path %s, step %d/%d%s",
             cfg.out_name, cfg.exposures, len(train_ds.items), len(train_ds.dirs), len(val_ds), device,
             ",".join(k for k, v in fast.describe().items() if v) or "none", step,
             cfg.steps, f", init {'; '.join(stage.init_notes)}" if stage.init_notes else "")

    stop = {"reason": None}

    def _signal(signum, _frame):
        stop["reason"] = signal.Signals(signum).name
    main_thread = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, _signal) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    run_dir.mkdir(parents=True, exist_ok=True)
    logf = open(run_dir / "log.jsonl", "a")
    t0, step0 = time.monotonic(), step
    last_val = history["val"][-1]["step"] if history["val"] else -1
    best = _Best(stage)
    if cfg.val_at_start and step == 0 and last_val < 0:
        _val(stage, val_ds, cfg, step, history, logf)
    try:
        for batch in loader:
            lr = cfg.lr_at(step)
            loss, parts = train_step(stage, opt, _to(batch, device), lr, fast)
            step += 1
            history["train"].append((step, loss.item()))
            elapsed = time.monotonic() - t0
            if step % cfg.log_every == 0 or step == 1:
                rec = {"step": step, "loss": loss.item(), **parts, "lr": lr, "wall_s": round(wall0 + elapsed, 1),
                       "steps_per_s": round((step - step0) / max(elapsed, 1e-9), 4)}
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                log.info("train %s: step %d/%d loss %.5f %s lr %.2e (%.3f steps/s)", cfg.out_name, step, cfg.steps,
                         loss.item(), " ".join(f"{k} {v:.4f}" for k, v in parts.items()), lr, rec["steps_per_s"])
            if step % cfg.val_every == 0:
                best.offer(_val(stage, val_ds, cfg, step, history, logf))
                last_val = step
            if step % cfg.ckpt_every == 0:
                _save_ckpt(ckpt_path, stage, opt, step, history, wall0 + elapsed, cfg, stage.init_notes, stage.previous)
            if cfg.max_minutes and elapsed > 60 * cfg.max_minutes:
                stop["reason"] = "max_minutes"
            if stop["reason"]:
                break
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    wall = wall0 + time.monotonic() - t0
    stopped = stop["reason"] or ("steps" if step >= cfg.steps else "data")
    if last_val != step:
        best.offer(_val(stage, val_ds, cfg, step, history, logf))
    _save_ckpt(ckpt_path, stage, opt, step, history, wall, cfg, stage.init_notes, stage.previous)
    ship_val, ship_step = best.restore(history["val"][-1], step)  # the run's checkpoint keeps its last state
    _plot(history, run_dir / "curve.png", f"{cfg.out_name} ({cfg.stage})", stage.metric)
    logf.close()
    summary = {"step": step, "stopped": stopped, "wall_time_s": round(wall, 1), "val": history["val"][-1],
               "run_dir": str(run_dir), "shipped": []}
    if stage.ship_files and cfg.ship != "never":
        summary["shipped"] = _ship(stage, cfg, train_ds, ship_step, wall, resumed_from, ship_val, run_dir, device, fast)
    log.info("train %s: stopped at step %d (%s) after %.0f s; %s", cfg.out_name, step, stopped, wall,
             ", ".join(f"{k} {v:.3f}" for k, v in history["val"][-1].items() if k != "step"))
    return summary


class _Best:
    """The best validated state of this invocation's trained networks (validation PSNR-mu), which is
    what ships: validation noise must not decide between a good run and a bad last step."""

    def __init__(self, stage: Stage) -> None:
        self.stage, self.val, self.state = stage, None, None

    def offer(self, res: dict) -> None:
        score = res.get("val_psnr_mu")
        if score is not None and (self.val is None or score > self.val["val_psnr_mu"]):
            self.val = res
            self.state = {k: {n: t.detach().clone() for n, t in self.stage.nets[k].state_dict().items()}
                          for k in self.stage.trained}

    def restore(self, last: dict, step: int) -> tuple[dict, int]:
        """Load the best state into the networks if it beats the last one; returns its validation
        record and step."""
        if self.val is None or self.val is last or self.val["val_psnr_mu"] <= last.get("val_psnr_mu", -math.inf):
            return last, step
        for k, state in self.state.items():
            self.stage.nets[k].load_state_dict(state)
        log.info("train: judging and shipping the best validated state, step %d (val PSNR-mu %.3f; last %.3f)",
                 self.val["step"], self.val["val_psnr_mu"], last["val_psnr_mu"])
        return self.val, int(self.val["step"])


def _val(stage, val_ds, cfg, step, history, logf) -> dict:
    res = {"step": step, **validate(stage, val_ds, cfg.batch)}
    history["val"].append(res)
    logf.write(json.dumps({"val": res}) + "\n")
    logf.flush()
    log.info("train %s: validation at step %d: %s", cfg.out_name, step,
             ", ".join(f"{k} {v:.3f}" for k, v in res.items() if k != "step"))
    return res


def _ship(stage: Stage, cfg: TrainConfig, train_ds: WindowDataset, step: int, wall: float,
          resumed_from: str | None, val: dict, run_dir: Path, device: torch.device, fast: FastPath) -> list[str]:
    """Write the stage's networks (in their ``val`` state, at ``step``) and their manifest entries."""
    folder = Path(cfg.weights_dir) if cfg.weights_dir else W.WEIGHTS_DIR
    manifest = W.read_manifest(folder)
    protocol = {"preset": cfg.val_preset, "patch": cfg.val_patch, "windows_per_scene": cfg.val_windows,
                "crops": len(_dataset(cfg, stage.kind, cfg.val_preset, train=False, classical_flow=stage.classical_flow)),
                "window_refs": f"references valid for the {window_length('refine', cfg.exposures)}-frame refine window"}
    files = {key: W.REGISTRY[f"{key}-{cfg.exposures}exp"].file for key in stage.ship_files}
    judged = files[stage.ship_files[-1]]  # finetune: both files or neither, judged by the final output
    old = manifest.get(judged)
    if cfg.ship == "auto" and old is not None and old.get("metrics", {}).get("val_protocol") == protocol \
            and old["metrics"].get("val_psnr_mu", -math.inf) > val["val_psnr_mu"]:
        log.warning("train: not shipping %s: val PSNR-mu %.3f is below the shipped %.3f (use --ship always)",
                    ", ".join(files.values()), val["val_psnr_mu"], old["metrics"]["val_psnr_mu"])
        return []
    start = val.get("val_psnr_mu_merge")  # a correction of the classical merge must not be worse than it
    if cfg.ship == "auto" and start is not None and val["val_psnr_mu"] < start:
        log.warning("train: not shipping %s: val PSNR-mu %.3f is below the %.3f of the merge it corrects",
                    ", ".join(files.values()), val["val_psnr_mu"], start)
        return []
    shipped, digests = [], {}
    for key, file in files.items():
        name = f"{key}-{cfg.exposures}exp"
        net = stage.nets[key]
        config = json.loads(json.dumps(net.config.to_dict()))
        digest = digests[key] = W.save(net, folder / file, config)
        prev = stage.previous.get(key)
        recipe = {
            "stages": f"{cfg.stage} ({'+'.join(stage.trained)} trained)", "data": train_ds.describe(),
            "steps": step, "batch": cfg.batch, "patch": cfg.patch,
            "lr_schedule": _schedule(cfg, stage),
            "losses": LOSSES[cfg.stage],
            "perc_weight": cfg.perc_weight if cfg.stage in ("refine", "finetune", "dealthdr") else None,
            "flow_weight": cfg.flow_weight if cfg.stage == "dealthdr" else None,
            "augmentation": ", ".join(["flips, rot90, channel permutation"]
                                      + ["per-channel tone perturbation of the reference"] * (cfg.tone and cfg.stage != "dealthdr" and not stage.classical_flow)
                                      + ["linear noise sigma 1e-3 on low exposures of noise-free scenes"] * cfg.noise),
            "branches": ("30% flow only (s=0), 30% attention only (s=inf), 40% FGMA with s ~ U(0,1] or U(1,100)"
                         if cfg.stage == "dealthdr" else None),
            "device": _device_name(device),
            "fast_path": fast.describe(),
            "coarse_sha256": (digests.get("coarse") or stage.previous.get("coarse", {}).get("sha256"))
                             if key == "refine" else None,
            "wall_time_s": round(wall, 1), "resumed_from": resumed_from, "init": stage.init_notes,
            "command": "vs-hdrvid train " + _command(cfg),
            "continued_from": ({"sha256": prev["sha256"], "recipe": prev.get("recipe"), "metrics": prev.get("metrics")}
                               if prev else None),
        }
        recipe = {k: v for k, v in recipe.items() if v is not None or k in ("resumed_from", "continued_from")}
        metrics = {k: round(v, 4) for k, v in val.items() if k != "step"}
        metrics["val_protocol"] = protocol
        entry = {"network": W.REGISTRY[name].network, "config": config, "sha256": digest,
                 "parameters": sum(p.numel() for p in net.parameters()), "recipe": recipe, "metrics": metrics,
                 "deviations": (DEALTHDR_DEVIATIONS if cfg.stage == "dealthdr" else DEVIATIONS)
                 + [REFINE_RESIDUAL_DEVIATION] * (key == "refine" and bool(config.get("coarse_residual")))
                 + [COARSE_MERGE_DEVIATION] * (key == "coarse" and config.get("blend") == "merge")
                 + _run_deviations(cfg, device)}
        W.register_in_manifest(file, entry, folder)
        (folder / "curves").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / "curve.png", folder / "curves" / f"{Path(file).stem}.png")
        shipped.append(str(folder / file))
        log.info("train: shipped %s (sha256 %s)", folder / file, digest[:16])
    return shipped


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    name = platform.machine()
    try:
        name = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu ({name}, {torch.get_num_threads()} threads)"


def _schedule(cfg: TrainConfig, stage: Stage) -> str:
    if cfg.cosine:
        return f"AdamW (0.9, 0.999) lr {cfg.lr:g}, cosine to {MIN_LR:g} over {cfg.steps} steps"
    return (f"Adam lr {cfg.lr:g} halved every {cfg.halve_every} steps"
            + (f"; flow net x{cfg.flow_lr_scale:g}" if "coarse" in stage.trained and cfg.stage != "spynet" else ""))


def _run_deviations(cfg: TrainConfig, device: torch.device) -> list[str]:
    out = []
    paper_patch, paper_batch = (192, "8") if cfg.stage == "dealthdr" else (256, "16 coarse / 8 refine")
    if device.type == "cpu":
        out.append(f"Trained on CPU: {cfg.patch}x{cfg.patch} patches (paper {paper_patch}), batch {cfg.batch} "
                   f"(paper {paper_batch}), far fewer iterations than the paper's epochs"
                   + (f"; the '{cfg.model}' width (DeAltHDRConfig.small)" if cfg.stage == "dealthdr" and cfg.model == "small" else "")
                   + ".")
    elif cfg.patch != paper_patch:
        out.append(f"{cfg.patch}x{cfg.patch} patches (paper {paper_patch}).")
    return out


def _command(cfg: TrainConfig) -> str:
    parts = [cfg.stage, f"--exposures {cfg.exposures}", f"--steps {cfg.steps}", f"--batch {cfg.batch}",
             f"--patch {cfg.patch}", f"--lr {cfg.lr:g}", f"--preset {cfg.preset}", f"--seed {cfg.seed}"]
    if cfg.max_minutes:
        parts.append(f"--max-minutes {cfg.max_minutes:g}")
    if cfg.stage == "dealthdr":
        parts += [f"--model {cfg.model}", f"--flow-weight {cfg.flow_weight:g}"]
    else:
        parts += [f"--blend {cfg.blend}"] + ["--no-flow-refine"] * (not cfg.flow_refine)
    if cfg.lr_halve_every:
        parts.append(f"--lr-halve-every {cfg.lr_halve_every}")
    return " ".join(parts)

