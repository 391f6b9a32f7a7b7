"""Temporal windows of a linearised clip, with the global transforms that align each neighbour."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import vapoursynth as vs

from ..bridge import NodeRunner, clamped_shift, shift_clip, window_index
from ..ops.warp import compose_affine, invert_affine
from ._common import EV_PROP, SIM_PROP, error

__all__ = ["ExposureWindow", "WindowFrames"]

core = vs.core


@dataclass
class WindowFrames:
    """One window as tensors.

    Attributes:
        frames: ``(T, C, H, W)`` linear radiance, slot order of ``offsets`` (None when not stacked).
        ev: ``(T,)`` exposure of each slot.
        sources: source frame number of each slot.
        to_ref: ``(T, 2, 3)`` similarity mapping each slot's frame onto the reference frame
            (identity for the reference and where the clip has no alignment props).
        props: the reference frame's props.
        slots: the ``(C, H, W)`` tensor of each slot as fetched (shared with the node's cache and
            other windows: read only). ``frames`` stacks copies of them.
    """

    frames: torch.Tensor | None
    ev: torch.Tensor
    sources: list[int]
    to_ref: torch.Tensor
    props: dict
    slots: list[torch.Tensor]


class ExposureWindow:
    """Frames ``n + offsets`` of a linearised clip, exposure-aware at the ends.

    Args:
        clip: a linearised clip (optionally with ``align`` props).
        offsets: slot offsets, e.g. ``(-1, 0, 1)``; 0 must be among them.
        period: length of the exposure pattern.
        node: node name for errors.
    """

    def __init__(self, clip: vs.VideoNode, offsets: Sequence[int], period: int, node: str):
        if 0 not in offsets:
            raise ValueError("a window needs the reference offset 0")
        self.offsets, self.period, self.node = list(offsets), period, node
        self.num_frames = clip.num_frames
        need = max(abs(o) for o in offsets)
        if clip.num_frames < min(need + 1, period + 1) or clip.num_frames < period:
            raise error(node, f"needs at least {max(period, min(need + 1, period + 1))} frames for its "
                              f"window, the clip has {clip.num_frames}")
        try:
            self.pixel_clips = [shift_clip(clip, o, period) for o in offsets]
        except IndexError as e:
            raise error(node, f"the clip is too short for a window of {offsets}: {e}") from None
        # props of every frame between a slot's source and the reference, to compose transforms
        reach = max(abs(window_index(n, o, clip.num_frames, period) - n)
                    for o in offsets for n in set(range(min(clip.num_frames, need + period)))
                    | set(range(max(0, clip.num_frames - need - period), clip.num_frames)))
        self.reach = max(reach, need)
        self.prop_offsets = [o for o in range(-self.reach, self.reach + 1) if o not in offsets]
        self.prop_clips = [clamped_shift(clip, o) for o in self.prop_offsets]

    @property
    def clips(self) -> list[vs.VideoNode]:
        """Clips to hand to ``ModifyFrame``: pixel slots first, then props-only neighbours."""
        return self.pixel_clips + self.prop_clips

    def gather(self, n: int, f: list[vs.VideoFrame], runner: NodeRunner, stack: bool = True) -> WindowFrames:
        """Upload (once per source frame) and collect the window of output frame ``n``.

        ``frames`` is a new stack the caller may modify; without ``stack`` it is None, for a caller
        that fills its own buffer from ``slots`` (warping some of them on the way).
        """
        k = len(self.offsets)
        sources = [window_index(n, o, self.num_frames, self.period) for o in self.offsets]
        slots = [runner.fetch(fr, key=(0, m)) for fr, m in zip(f[:k], sources)]
        frames = torch.stack(slots) if stack else None
        ev = torch.tensor([float(fr.props[EV_PROP]) for fr in f[:k]], dtype=torch.float32)
        sims: dict[int, list[float]] = {}
        for fr, m in list(zip(f[:k], sources)) + [
                (fr, min(max(n + o, 0), self.num_frames - 1)) for fr, o in zip(f[k:], self.prop_offsets)]:
            if SIM_PROP in fr.props:
                sims[m] = [float(v) for v in fr.props[SIM_PROP]]
        to_ref = torch.stack([self._transform(m, n, sims) for m in sources])
        return WindowFrames(frames, ev, sources, to_ref, dict(f[self.offsets.index(0)].props), slots)

    @staticmethod
    def _transform(m: int, n: int, sims: dict[int, list[float]]) -> torch.Tensor:
        """Similarity mapping frame ``m`` onto frame ``n`` from the per-frame ``HdrSimilarityPrev``."""
        eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        if m == n or not sims:
            return eye
        lo, hi = min(m, n), max(m, n)
        acc = eye[None].double()
        for i in range(lo + 1, hi + 1):  # sims[i] maps i-1 onto i
            step = torch.tensor(sims.get(i, eye.flatten().tolist()), dtype=torch.float64).view(1, 2, 3)
            acc = compose_affine(acc, step)
        return (acc if m < n else invert_affine(acc))[0].float()
