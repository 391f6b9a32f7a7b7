"""A synthetic dynamic HDR scene: a camera-viewed background under moving foreground layers.

:class:`Scene` renders scene radiance at any continuous time (so long exposures integrate true
sub-frames, DeAltHDR section 4.1 / Appendix A, instead of interpolated ones) and computes the
ground-truth optical flow and occlusion between any two times analytically:

* every pixel ``p`` of time ``t0`` belongs to its *dominant* layer (the topmost with coverage
  >= 0.5, else the background);
* its position at ``t1`` is the exact image of the same scene point: the camera rotation/zoom
  mapping for a panorama background, the projection of the 3D hit point for a
  :class:`~vs_hdrvid.synth.room.Room`, ``from_layer(t1, to_layer(t0, p))`` for a layer;
* it is occluded at ``t1`` when that position is out of view, or a layer above its own covers it
  there (coverage > 0.02), or when ``p`` itself is a mixed edge pixel (its colour blends two layers,
  so no single flow describes it); a room adds its own depth test and silhouette pixels (its
  ``map_points`` reports them as not visible).

Convention: flow ``(2, H, W)`` float32, channel 0 = u (x), 1 = v (y), in pixels; ``p + flow(p)``
is where the scene point of pixel ``p`` at ``t0`` is at ``t1``. Backward-warping the ``t1`` frame
with this flow reproduces the ``t0`` frame outside the occlusion mask.
"""
from __future__ import annotations

import numpy as np
import torch

from vs_hdrvid.synth.camera import Background, pixel_grid
from vs_hdrvid.synth.layers import Layer
from vs_hdrvid.synth.room import Room

__all__ = ["Scene", "MIXED_LO", "DOMINANT"]

#: coverage above which a layer counts as present at a point (occluder / mixed pixel test)
MIXED_LO = 0.02
#: coverage at which a layer owns a pixel
DOMINANT = 0.5


class Scene:
    """Background (a panorama/plate :class:`Background` or a 3D :class:`Room`) plus layers (bottom
    to top), rendered at ``width x height``.

    Example:
        >>> from vs_hdrvid.synth.sources import procedural_panorama
        >>> from vs_hdrvid.synth.camera import Background, CameraPath
        >>> bg = Background([procedural_panorama(0, 256)], "equirect", CameraPath((0.0, 0.1, 0.0)), 64, 48)
        >>> Scene(bg, []).render(0.0).shape
        (48, 64, 3)
    """

    def __init__(self, background: Background | Room, layers: list[Layer]):
        self.background, self.layers = background, layers
        self.width, self.height = background.width, background.height
        self.grid = pixel_grid(self.height, self.width)             # float64: flow geometry
        self.grid32 = self.grid.to(torch.float32)                   # float32: rendering

    def render_tensor(self, t: float) -> torch.Tensor:
        """Scene radiance at time ``t`` as ``(3, H, W)`` float32 (layers composited over)."""
        img = self.background.render(t)
        for layer in self.layers:
            out = layer.render(t, self.grid32)
            if out is None:
                continue
            rgb, alpha, (y0, y1, x0, x1) = out
            reg = img[:, y0:y1, x0:x1]
            img[:, y0:y1, x0:x1] = reg + alpha * (rgb - reg)
        return img

    def render(self, t: float) -> np.ndarray:
        """Scene radiance at time ``t`` as ``(H, W, 3)`` float32."""
        return self.render_tensor(t).permute(1, 2, 0).contiguous().numpy()

    def render_mean(self, times: list[float]) -> np.ndarray:
        """Mean radiance over sub-frame ``times`` (a long exposure's integral), accumulated in float64.

        DeAltHDR Appendix A builds a long exposure from the mean of consecutive sub-frames.
        """
        acc = np.zeros((self.height, self.width, 3), np.float64)
        for t in times:
            acc += self.render(t)
        return (acc / len(times)).astype(np.float32)

    def _coverage(self, t: float) -> list[torch.Tensor]:
        """Per-layer coverage ``(H, W)`` float64 on the pixel grid at time ``t``."""
        covs = []
        for layer in self.layers:
            c = torch.zeros(self.height, self.width, dtype=torch.float64)
            box = layer.bbox(t, self.height, self.width)
            if box is not None:
                y0, y1, x0, x1 = box
                c[y0:y1, x0:x1] = layer.alpha_at(t, layer.to_layer(t, self.grid[y0:y1, x0:x1]))
            covs.append(c)
        return covs

    def flow(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth flow ``(2, H, W)`` float32 from ``t0`` to ``t1`` and occlusion ``(H, W)`` uint8.

        ``occ = 1`` where the pixel's scene point is hidden, out of view, or a mixed edge pixel at
        ``t1`` (see the module docstring).
        """
        grid, h, w = self.grid, self.height, self.width
        covs = self._coverage(t0)
        dom = torch.zeros(h, w, dtype=torch.int64)            # 0 = background, k + 1 = layer k
        for k, c in enumerate(covs):
            dom[c >= DOMINANT] = k + 1
        mixed = torch.zeros(h, w, dtype=torch.bool)
        for k, c in enumerate(covs):
            mixed |= (dom < k + 1) & (c > MIXED_LO)           # something above the owner shows through
            mixed |= (dom == k + 1) & (c < 1 - MIXED_LO)      # the owner's own soft edge
        target, front = self.background.map_points(t0, t1, grid)
        for k, layer in enumerate(self.layers):
            sel = dom == k + 1
            if bool(sel.any()):
                target[sel] = layer.from_layer(t1, layer.to_layer(t0, grid[sel]))
                front[sel] = True
        x, y = target[..., 0], target[..., 1]
        occ = mixed | ~front | (x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)
        for k, layer in enumerate(self.layers):               # covered at t1 by a layer above the owner
            cand = (dom < k + 1) & ~occ
            if bool(cand.any()):
                pts = target[cand]
                covered = layer.alpha_at(t1, layer.to_layer(t1, pts)) > MIXED_LO
                idx = cand.nonzero(as_tuple=True)
                occ[idx[0][covered], idx[1][covered]] = True
        flow = (target - grid).permute(2, 0, 1).to(torch.float32).contiguous().numpy()
        return flow, occ.numpy().astype(np.uint8)

    def describe(self) -> dict:
        """JSON-friendly record of the camera and layers (for ``meta.json``)."""
        return {**self.background.describe(), "layers": [layer.describe() for layer in self.layers]}
