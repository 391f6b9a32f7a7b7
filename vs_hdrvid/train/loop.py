"""The training loop shared by every stage: schedule, logging, validation, checkpoints, shipping.

A run lives in ``<runs_dir>/<out_name>/``: ``ckpt.pt`` (networks, their configs, optimiser, step,
RNG states, history, wall time; written every ``ckpt_every`` steps and when the run stops),
``log.jsonl`` (one record per log line and validation) and ``curve.png``; with ``cfg.ema`` the
checkpoint also holds the moving average of the weights, which validation scores and the run
ships. A run stops cleanly at ``steps``, after ``max_minutes``, or on SIGINT/SIGTERM, always
writing a final checkpoint; ``resume`` continues it. At the end the stage's networks are written
to the weights folder with :func:`vs_hdrvid.weights.save` and described in ``MANIFEST.json``
(config, sha256, parameters, recipe, validation metrics, deviations from the paper), and the curve
is copied to ``<weights>/curves/<file>.png``.

Validation is deterministic: fixed crops of the validation preset (no augmentation), networks in
eval mode; the reference-only linearisation is scored on the same crops.
"""
from __future__ import annotations

import contextlib
import hashlib
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
from vs_hdrvid.devices import resolve_device
from vs_hdrvid.train.config import TrainConfig
from vs_hdrvid.train.data import window_length
from vs_hdrvid.train.ema import WeightAverage
from vs_hdrvid.train.fastpath import FastPath
from vs_hdrvid.train.stages import Stage, make_stage

#: A run stops after this many steps in a row whose loss or gradients are not finite.
MAX_SKIPPED_STEPS = 20

__all__ = ["train", "make_optimizer", "train_step", "make_loader", "validate"]

log = logging.getLogger("vs_hdrvid.train")


def make_optimizer(cfg: TrainConfig, stage: Stage, step: int) -> torch.optim.Optimizer:
    """Adam (Chen et al.) or AdamW (DeAltHDR) over the stage's parameter groups."""
    groups = stage.param_groups()
    if cfg.cosine:
        return torch.optim.AdamW(groups, lr=cfg.lr_at(step), betas=(0.9, 0.999))
    return torch.optim.Adam(groups, lr=cfg.lr_at(step))


def make_loader(cfg: TrainConfig, ds, step: int, device: torch.device) -> DataLoader:
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
    """One optimiser step of ``stage`` on ``batch`` (already on the stage's device).

    A step whose loss or gradients are not finite is not taken (the returned loss is then not
    finite): one such update would turn the weights and Adam's moments into NaN for good.
    """
    for g in opt.param_groups:
        g["lr"] = lr * g["lr_scale"]
    with fast.autocast(stage.device):
        loss, parts = stage.loss(batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    norms = torch.stack(torch._foreach_norm(grads)) if grads else loss.detach()
    if not bool(torch.isfinite(loss) & torch.isfinite(norms).all()):  # one host sync
        opt.zero_grad(set_to_none=True)
        return torch.full_like(loss.detach(), math.nan), parts
    opt.step()
    stage.after_step()
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


def validate(stage: Stage, val, batch: int) -> dict[str, float]:
    """Mean of each validation value over the fixed crops, plus per reference exposure."""
    for net in stage.nets.values():
        net.eval()
    values: dict[str, list[Tensor]] = {}
    ref_ev = []
    loader = DataLoader(val, batch_size=batch, shuffle=False, num_workers=0,
                        generator=torch.Generator())  # leaves the global RNG alone (resume-exact)
    for b in loader:
        b = _to(b, stage.device)
        with torch.no_grad():
            res = stage.validate(b)
        for k, v in res.items():
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
    if history["train"] and min(loss for _, loss in history["train"]) > 0:  # log losses go negative
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
               wall: float, cfg: TrainConfig, notes: list[str], previous: dict, ema: WeightAverage | None) -> None:
    state = {"config": cfg.to_dict(), "step": step, "wall_time_s": wall, "history": history,
             "nets": {k: v.state_dict() for k, v in stage.nets.items()},
             "net_configs": {k: v.config.to_dict() for k, v in stage.nets.items()},
             "optimizer": opt.state_dict(), "rng": _rng_state(), "init": notes,
             "previous": {k: e.to_dict() for k, e in previous.items()},
             "ema": ema.state_dict() if ema else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.part")
    torch.save(state, tmp)
    tmp.replace(path)


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one training stage; returns a summary dict.

    Returns:
        ``{"step", "stopped", "wall_time_s", "val": {...}, "shipped": [files], "run_dir"}``.
    """
    try:
        return _train(cfg)
    finally:  # the fast path's denormal flushing is process-wide: it ends with the run (torch's default)
        torch.set_flush_denormal(False)


def _train(cfg: TrainConfig) -> dict:
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
        now = cfg.run_identity()
        was = {k: ckpt["config"].get(k, _default(cfg, k)) for k in now}
        if was != now:
            diff = ", ".join(f"{k} {was[k]!r} (now {now[k]!r})" for k in now if was[k] != now[k])
            raise ValueError(f"train: {ckpt_path} is another run: {diff}; resume with its settings or "
                             f"start a new run with --out-name")
        stage.rebuild(ckpt["net_configs"])
        for k, net in stage.nets.items():
            net.load_state_dict(ckpt["nets"][k])
        step, wall0, history = ckpt["step"], ckpt["wall_time_s"], ckpt["history"]
        stage.init_notes = ckpt.get("init", [])
        stage.previous = {k: W.ManifestEntry.from_dict(e) for k, e in ckpt.get("previous", {}).items()}
        resumed_from = f"{ckpt_path} (step {step})"
    else:
        stage.init()
    stage.to()
    fast = FastPath.baseline() if cfg.fp32 else FastPath.detect(device, cfg.compile, cfg.stage)
    fast.prepare(stage.nets, stage.trained)
    opt = make_optimizer(cfg, stage, step)
    ema = WeightAverage({k: stage.nets[k] for k in stage.trained}, cfg.ema) if cfg.ema else None
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        _set_rng_state(ckpt["rng"])
        if ema and ckpt.get("ema"):  # else the average starts from the checkpoint's weights
            ema.load_state_dict(ckpt["ema"])
    averaged = ema.applied if ema else contextlib.nullcontext

    train_ds, val_ds = stage.datasets()
    loader = make_loader(cfg, train_ds, step, device)
    log.info("train %s: %d-exposure, data %s, %s val crops, device %s, fast path %s, step %d/%d%s",
             cfg.out_name, cfg.exposures, train_ds.describe(), len(val_ds) if val_ds is not None else "no", device,
             ",".join(k for k, v in fast.describe().items() if v) or "none", step,
             cfg.steps, f", init {'; '.join(stage.init_notes)}" if stage.init_notes else "")

    stop = {"reason": None}

    def _signal(signum, _frame):
        stop["reason"] = signal.Signals(signum).name
    main_thread = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, _signal) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    run_dir.mkdir(parents=True, exist_ok=True)
    logf = open(run_dir / "log.jsonl", "a")
    t0, step0, skipped = time.monotonic(), step, 0
    last_val = history["val"][-1]["step"] if history["val"] else -1
    best = _Best(stage)
    if val_ds is None:  # nothing to validate on (unlabeled footage)
        last_val = step
    elif cfg.val_at_start and step == 0 and last_val < 0:
        with averaged():
            _val(stage, val_ds, cfg, step, history, logf)
    try:
        for batch in loader:
            lr = cfg.lr_at(step)
            loss, parts = train_step(stage, opt, _to(batch, device), lr, fast)
            step += 1
            skipped = skipped + 1 if not math.isfinite(loss.item()) else 0
            if ema and not skipped:
                ema.update()
            if skipped:
                log.warning("train %s: step %d not taken, its loss or gradients are not finite (%d in a row)",
                            cfg.out_name, step, skipped)
                if skipped >= MAX_SKIPPED_STEPS:
                    stop["reason"] = "non-finite"
            history["train"].append((step, loss.item()))
            elapsed = time.monotonic() - t0
            if step % cfg.log_every == 0 or step == 1:
                rec = {"step": step, "loss": loss.item(), **parts, "lr": lr, "wall_s": round(wall0 + elapsed, 1),
                       "steps_per_s": round((step - step0) / max(elapsed, 1e-9), 4)}
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                log.info("train %s: step %d/%d loss %.5f %s lr %.2e (%.3f steps/s)", cfg.out_name, step, cfg.steps,
                         loss.item(), " ".join(f"{k} {v:.4f}" for k, v in parts.items()), lr, rec["steps_per_s"])
            if step % cfg.val_every == 0 and val_ds is not None:
                with averaged():
                    best.offer(_val(stage, val_ds, cfg, step, history, logf))
                last_val = step
            if step % cfg.ckpt_every == 0:
                _save_ckpt(ckpt_path, stage, opt, step, history, wall0 + elapsed, cfg, stage.init_notes, stage.previous,
                           ema)
            if cfg.max_minutes and elapsed > 60 * cfg.max_minutes:
                stop["reason"] = "max_minutes"
            if stop["reason"]:
                break
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    wall = wall0 + time.monotonic() - t0
    stopped = stop["reason"] or ("steps" if step >= cfg.steps else "data")
    if val_ds is not None and last_val != step:
        with averaged():
            best.offer(_val(stage, val_ds, cfg, step, history, logf))
    _save_ckpt(ckpt_path, stage, opt, step, history, wall, cfg, stage.init_notes, stage.previous, ema)
    last = history["val"][-1] if history["val"] else {}
    if ema:  # what the last validation scored
        ema.copy_to_nets()
    ship_val, ship_step = best.restore(last, step)  # the run's checkpoint keeps its last state
    _plot(history, run_dir / "curve.png", f"{cfg.out_name} ({cfg.stage})", stage.metric)
    logf.close()
    summary = {"step": step, "stopped": stopped, "wall_time_s": round(wall, 1), "val": last,
               "run_dir": str(run_dir), "shipped": []}
    if stage.ship_files and cfg.ship != "never":
        # this invocation's validation of the weights it started from, on the same crops as ship_val
        start_val = history["val"][0] if resumed_from is None and history["val"] and history["val"][0]["step"] == 0 \
            else None
        summary["shipped"] = _ship(stage, cfg, train_ds, val_ds, ship_step, wall, resumed_from, ship_val, run_dir,
                                   device, fast, start_val)
    log.info("train %s: stopped at step %d (%s) after %.0f s; %s", cfg.out_name, step, stopped, wall,
             ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k != "step") or "not validated")
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


def _default(cfg: TrainConfig, key: str):
    """The default of a setting of ``cfg``'s kind (for checkpoints written before it existed)."""
    if key in TrainConfig.__dataclass_fields__:
        return TrainConfig.__dataclass_fields__[key].default
    return next(f.default for f in cfg.options.fields() if f.name == key)


def val_crops_digest(val_ds) -> str:
    """sha256 of the validation crops' ground truth: two val folders of one preset name (synthesised
    on different machines, or by another generator) give different crops and figures that do not compare."""
    h = hashlib.sha256()
    for i in range(len(val_ds)):
        h.update(np.ascontiguousarray(val_ds[i]["gt"].numpy()).tobytes())
    return h.hexdigest()


def _ship(stage: Stage, cfg: TrainConfig, train_ds, val_ds, step: int, wall: float, resumed_from: str | None,
          val: dict, run_dir: Path, device: torch.device, fast: FastPath, start_val: dict | None = None) -> list[str]:
    """Write the stage's networks (in their ``val`` state, at ``step``) and their manifest entries.

    Under ``ship="auto"`` the shipped weights are beaten when ``val`` is not below their figure on the
    same crops: this invocation's validation at step 0 (``start_val``) where it started from exactly
    what the shipped file computes, else the figure in their manifest entry where its protocol (crops digest
    included) is this run's; otherwise nothing ships.
    """
    folder = stage.ship_folder()
    manifest = W.read_manifest(folder)
    files = {key: W.REGISTRY[f"{key}-{cfg.exposures}exp"].file for key in stage.ship_files}
    protocol = None
    if val_ds is not None:
        protocol = {"preset": cfg.val_preset, "patch": cfg.val_patch, "windows_per_scene": cfg.val_windows,
                    "crops": len(val_ds),
                    "window_refs": f"references valid for the {window_length('refine', cfg.exposures)}-frame refine window",
                    "crops_sha256": val_crops_digest(val_ds)}
        judged_key = stage.ship_files[-1]  # finetune: both files or neither, judged by the final output
        old = manifest.get(files[judged_key])
        prev = stage.previous.get(judged_key)
        if cfg.ship == "auto" and old is not None:
            if start_val is not None and prev is not None and prev.sha256 == old.sha256 and stage.starts_as_previous:
                shipped_val, where = start_val["val_psnr_mu"], "validated at this run's start"
            elif old.metrics.get("val_protocol") == protocol:
                shipped_val, where = old.metrics.get("val_psnr_mu", -math.inf), "in its manifest entry"
            else:
                log.warning("train: not shipping %s: the shipped weights were validated on other crops (%s), so the "
                            "two figures do not compare (use --ship always to replace them)",
                            ", ".join(files.values()), old.metrics.get("val_protocol"))
                return []
            if shipped_val > val["val_psnr_mu"]:
                log.warning("train: not shipping %s: val PSNR-mu %.3f is below the shipped weights' %.3f (%s; use "
                            "--ship always)", ", ".join(files.values()), val["val_psnr_mu"], shipped_val, where)
                return []
        start = val.get(stage.start_metric) if stage.start_metric else None  # a correction must not be
        if cfg.ship == "auto" and start is not None and val["val_psnr_mu"] < start:  # worse than what it corrects
            log.warning("train: not shipping %s: val PSNR-mu %.3f is below the %.3f of the %s it corrects",
                        ", ".join(files.values()), val["val_psnr_mu"], start, stage.start_metric.removeprefix("val_psnr_mu_"))
            return []
    shipped, digests = [], {}
    for key, file in files.items():
        name = f"{key}-{cfg.exposures}exp"
        net = stage.nets[key]
        prev = stage.previous.get(key)
        config = json.loads(json.dumps(net.config.to_dict()))
        metrics = {k: round(v, 4) for k, v in val.items() if k != "step"}
        if protocol is not None:
            metrics["val_protocol"] = protocol
        recipe = {
            "stages": f"{cfg.stage} ({'+'.join(stage.trained)} trained)", "data": train_ds.describe(),
            "steps": step, "batch": cfg.batch, "patch": cfg.patch, "lr_schedule": stage.schedule_text(),
            **stage.recipe(key, digests),
            "device": _device_name(device), "fast_path": fast.describe(),
            "wall_time_s": round(wall, 1), "resumed_from": resumed_from, "init": stage.init_notes,
            "command": stage.command(),
            "continued_from": {"sha256": prev.sha256, "recipe": prev.recipe, "metrics": prev.metrics} if prev else None,
        }
        entry = W.write(net, name, folder, recipe=recipe, metrics=metrics,
                        deviations=stage.net_deviations(key, config) + stage.run_deviations(device))
        digests[key] = entry.sha256
        (folder / "curves").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / "curve.png", folder / "curves" / f"{Path(file).stem}.png")
        shipped.append(str(folder / file))
        log.info("train: shipped %s (sha256 %s)", folder / file, entry.sha256[:16])
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
