"""Shared fixtures: a synthetic alternating-exposure sequence with known truth, and clips from arrays.

The scene is a smooth log-normal texture with a bright region far above 1 on a canvas larger than
the frame; each frame sees the canvas through a known similarity, so the truth is the radiance map
per frame (``H`` on the ``f^-1(L) / 2**EV`` scale) and the transform between consecutive frames.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pytest
import torch
import vapoursynth as vs

ROOT = Path(__file__).resolve().parents[1]
core = vs.core
Motion = tuple[float, float, float, float]  # (tx, ty px, angle deg, scale) per frame step


@pytest.fixture(autouse=True, scope="session")
def _small_threads():
    """2 shared cores: keep torch and VapourSynth from oversubscribing them."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    core.num_threads = 2
    yield
    torch.set_num_threads(n)


def step_matrix(motion: Motion, w: int, h: int) -> np.ndarray:
    """2x3 similarity about the frame centre: rotate/scale by ``motion`` then translate."""
    tx, ty, angle, scale = motion
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), -angle, scale)  # +angle: x towards y
    m[:, 2] += (tx, ty)
    return m


def _h3(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def hdr_canvas(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth log-normal RGB texture (median ~0.12) with a bright disc (~3) near the centre."""
    rng = np.random.default_rng(seed)
    logf = np.zeros((h, w), np.float32)
    for k, amp in ((4, 1.0), (12, 0.6), (32, 0.35)):
        small = rng.standard_normal((max(2, h * k // w), k)).astype(np.float32)
        logf += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    logf = (logf - logf.mean()) / logf.std()
    tint = np.array([1.0, 0.9, 0.75], np.float32)
    hdr = 0.12 * np.exp(0.9 * logf)[..., None] * tint
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((yy - 0.45 * h) ** 2 + (xx - 0.55 * w) ** 2) < (0.08 * min(h, w)) ** 2
    hdr[disc] = (3.0, 2.8, 2.5)
    return cv2.GaussianBlur(hdr.astype(np.float32), (0, 0), 1.0)


@dataclass
class SynthSequence:
    """What :func:`make_sequence` wrote and the truth behind it."""

    pattern: str                     # printf path of the LDR frames
    gt: list[np.ndarray]             # (H, W, 3) float32 radiance per frame
    ldr: list[np.ndarray]            # (H, W, 3) LDR values in [0, 1] after quantisation
    evs: list[float]                 # EV per frame
    exposures: list[float]           # the repeating pattern
    transforms: list[np.ndarray]     # 2x3, frame n-1 -> frame n (identity for frame 0)
    object_masks: list[np.ndarray] = field(default_factory=list)  # (H, W) bool per frame

    @property
    def h_sat(self) -> float:
        return 2.0 ** -min(self.exposures)


def make_sequence(tmp_path: Path, evs: Sequence[float], frames: int, size: tuple[int, int] = (64, 96),
                  motion: Motion | Sequence[Motion] | None = (1.0, 0.5, 0.0, 1.0), bit_depth: int = 8,
                  with_exposures_txt: bool = False, moving_object: bool = False, seed: int = 0,
                  name: str = "seq") -> SynthSequence:
    """Render ``frames`` LDR frames (gamma 2.2, clipped, quantised) of a panning HDR scene.

    Files go to ``tmp_path/name/ldr/%05d.png``; ``exposures.txt`` (one EV per frame) is written to
    ``tmp_path/name`` when asked. ``motion`` is one similarity step per frame, or a list of them.
    """
    h, w = size
    pad = max(16, int(0.25 * max(h, w)))
    canvas = hdr_canvas(h + 2 * pad, w + 2 * pad, seed)
    steps = ([motion] * (frames - 1) if motion is None or isinstance(motion[0], (int, float))
             else list(motion))
    folder = Path(tmp_path) / name / "ldr"
    folder.mkdir(parents=True, exist_ok=True)
    a = np.array([[1.0, 0, -pad], [0, 1.0, -pad]])  # canvas -> frame 0
    out = SynthSequence(os.fspath(folder / "%05d.png"), [], [], [], list(map(float, evs)), [])
    qmax = 255 if bit_depth == 8 else 65535
    for n in range(frames):
        step = np.array([[1.0, 0, 0], [0, 1.0, 0]]) if n == 0 or steps[n - 1] is None \
            else step_matrix(steps[n - 1], w, h)
        a = (_h3(step) @ _h3(a))[:2]
        hdr = cv2.warpAffine(canvas, a, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        hdr = np.maximum(hdr, 1e-4).astype(np.float32)
        if moving_object:
            mask = np.zeros((h, w), bool)
            y0, x0, s = h // 4, (w // 8 + 5 * n) % max(1, w - h // 3), h // 3
            mask[y0:y0 + s, x0:x0 + s] = True
            hdr[mask] = (0.02, 0.025, 0.03)
            out.object_masks.append(mask)
        ev = float(evs[n % len(evs)])
        ldr = np.clip(hdr * 2.0 ** ev, 0, 1) ** (1 / 2.2)
        code = np.round(ldr * qmax).astype(np.uint8 if bit_depth == 8 else np.uint16)
        cv2.imwrite(out.pattern % n, code[..., ::-1])
        out.gt.append(hdr)
        out.ldr.append(code.astype(np.float32) / qmax)
        out.evs.append(ev)
        out.transforms.append(step)
    if with_exposures_txt:
        (folder.parent / "exposures.txt").write_text("".join(f"{e}\n" for e in out.evs))
    return out


def clip_from_arrays(arrays: Sequence[np.ndarray], props: Sequence[dict] | None = None,
                     fmt: int = vs.RGBS) -> vs.VideoNode:
    """A clip whose frame ``n`` holds ``arrays[n]`` (``(H, W, 3)``) and ``props[n]``."""
    h, w = arrays[0].shape[:2]
    blank = core.std.BlankClip(format=fmt, width=w, height=h, length=len(arrays), keep=True)
    dtype = {vs.RGBS: np.float32, vs.RGB24: np.uint8, vs.RGB48: np.uint16}[fmt]

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), arrays[n][..., p].astype(dtype))
        if props:
            out.props.update(props[n])
        return out

    return core.std.ModifyFrame(blank, blank, fill)


def planes(frame: vs.VideoFrame) -> np.ndarray:
    """``(H, W, C)`` float64 copy of a frame's planes."""
    return np.stack([np.asarray(frame[p]) for p in range(frame.format.num_planes)], -1).astype(np.float64)

