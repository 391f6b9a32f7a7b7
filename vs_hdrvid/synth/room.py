"""A 3D room seen by a camera that rotates and translates: true depth, parallax and occlusion.

The scene is the inside of an axis-aligned box (walls, floor, ceiling; convex from the inside, so
no face hides another) plus free-standing textured rectangles (panels) nearer the camera, which do
hide what lies behind them. The camera keeps the rotation, zoom and shake of its
:class:`~vs_hdrvid.synth.camera.CameraPath` and moves along a :class:`Dolly`,
``c(t) = c0 + v t + a t^2 / 2`` (world units, metres). Pixel ``p`` at time ``t`` looks from ``c(t)``
along ``d = R(t)^T K(t)^-1 [x, y, 1]^T``; it sees the nearest hit ``X`` of that ray (ray casting
against the six faces and every panel; with the camera-space ``z`` of ``d`` equal to 1, the ray
parameter of a hit is its depth).

Flow is exact: ``X`` seen at ``t0`` appears at ``t1`` at ``pi(K(t1) R(t1) (X - c(t1)))``. It is
occluded at ``t1`` when it is behind the camera, when the segment from ``c(t1)`` to ``X`` meets
another surface first (relative tolerance ``1e-6``), or when a panel nearer than ``X`` lies within
half a pixel of its image (that pixel blends the panel in, like a layer's coverage > 0.02 in
:mod:`vs_hdrvid.synth.scene`). A pixel whose 2x2 sub-pixel rays at ``t0`` meet different panels,
or a panel and the box, is a mixed silhouette pixel and occluded too (no single flow describes it).

Rendering averages the 2x2 sub-pixel rays (anti-aliased silhouettes) and samples textures from a
box-filtered mip pyramid at the level of each ray's footprint (no moire on slanted, distant
surfaces). Box faces repeat their texture by mirroring; a panel shows its whole texture.

Convention: time ``t`` in frame intervals, world x right, y down, z forward (as in
:mod:`vs_hdrvid.synth.camera`); point sets ``(..., 2)`` ``(x, y)`` pixels, float64 for flow
geometry, float32 for rendering; images ``(3, H, W)`` float32 radiance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vs_hdrvid.synth.camera import CameraPath, pixel_grid, rotation_matrix

__all__ = ["Dolly", "Panel", "Room", "FACES"]

#: Box faces in surface-id order (``2 * axis + (side is the upper bound)``); panel ``k`` is ``6 + k``.
FACES = ("x-", "x+", "ceiling", "floor", "back", "front")
#: Sub-pixel offsets of the rendered rays (2x2 supersampling) and of the mixed-pixel test.
_SUB = ((-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25))
#: Offsets around a flow target where a nearer panel counts as covering it.
_HALO = ((-0.5, -0.5), (0.5, -0.5), (-0.5, 0.5), (0.5, 0.5))


@dataclass(frozen=True)
class Dolly:
    """Camera translation ``c(t) = position0 + velocity t + acceleration t^2 / 2`` (metres, frames)."""

    position0: tuple[float, float, float]
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)
    acceleration: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def position(self, t: float) -> np.ndarray:
        """Camera centre ``(3,)`` float64 at time ``t``."""
        return np.array([self.position0[i] + self.velocity[i] * t + 0.5 * self.acceleration[i] * t * t
                         for i in range(3)])

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Panel:
    """A textured rectangle: centre, orthonormal in-plane axes ``u`` (texture x) and ``v`` (texture
    y), half sizes along them (metres)."""

    centre: tuple[float, float, float]
    u: tuple[float, float, float]
    v: tuple[float, float, float]
    half: tuple[float, float]

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in self.__dict__.items()}


class Room:
    """A textured box with panels inside, seen by a moving pinhole camera (see the module doc).

    Offers :class:`Scene` what :class:`~vs_hdrvid.synth.camera.Background` does: ``width``,
    ``height``, ``render(t)``, ``map_points(t0, t1, pts)`` and ``describe()``.

    Args:
        lo, hi: opposite corners of the box (the camera stays strictly inside).
        panels: the free-standing rectangles.
        textures: ``(S, S, 3)`` radiance per surface: the six :data:`FACES`, then one per panel.
        tiles: world size of one texture repeat on each face (6 values, metres).
        path: rotation, zoom and shake of the camera.
        dolly: translation of the camera.
        width, height: output size in pixels.
        gain: radiance scale of every texture; results are clamped to ``[0, clamp]``.
        names: provenance of the textures (``describe``).

    Shape:
        - render: ``(3, H, W)`` float32
        - map_points: ``pts (..., 2)`` -> ``(..., 2)`` float64 positions, ``(...)`` bool visible

    Example:
        >>> import numpy as np
        >>> tex = [np.full((8, 8, 3), 0.2, np.float32)] * 6
        >>> room = Room((-3, -2, -2), (3, 1.5, 8), [], tex, [2.0] * 6, CameraPath((0.0, 0.0, 0.0)),
        ...             Dolly((0.0, 0.0, 0.0), (0.05, 0.0, 0.0)), 64, 48)
        >>> room.render(0.0).shape
        torch.Size([3, 48, 64])
    """

    def __init__(self, lo, hi, panels: list[Panel], textures: list[np.ndarray], tiles, path: CameraPath,
                 dolly: Dolly, width: int, height: int, gain: float = 1.0, clamp: float = 6e4,
                 names: tuple[str, ...] = ()):
        if len(textures) != 6 + len(panels) or len(tiles) != 6:
            raise ValueError(f"Room: need {6 + len(panels)} textures and 6 tiles, got {len(textures)}, {len(tiles)}")
        self.lo, self.hi = tuple(float(v) for v in lo), tuple(float(v) for v in hi)
        self.panels, self.tiles, self.names = list(panels), tuple(float(v) for v in tiles), tuple(names)
        self.path, self.dolly, self.width, self.height, self.gain = path, dolly, width, height, gain
        self._mips = [self._pyramid(torch.clamp(torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32))
                                                .permute(2, 0, 1)[None] * gain, 0.0, clamp)) for t in textures]
        self._frames = self._surface_frames()
        grid = pixel_grid(height, width).to(torch.float32)
        self._sub = torch.stack([grid + torch.tensor(o, dtype=torch.float32) for o in _SUB])   # (4, H, W, 2)

    @staticmethod
    def _pyramid(tex: torch.Tensor) -> list[torch.Tensor]:
        """Box-filtered levels ``(1, 3, S / 2^k, S / 2^k)`` of a texture, down to a few texels."""
        out = [tex.contiguous()]
        while min(out[-1].shape[-2:]) >= 4:
            out.append(F.avg_pool2d(out[-1], 2))
        return out

    def _surface_frames(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float, float]]:
        """Per surface: origin, texture x and y axes, and the half extents mapped onto ``[-1, 1]``."""
        lo, hi = np.array(self.lo), np.array(self.hi)
        mid, eye = (lo + hi) / 2, np.eye(3)
        out = []
        for axis in range(3):
            a, b = {0: (2, 1), 1: (0, 2), 2: (0, 1)}[axis]    # walls (z, y) / (x, y), floor and ceiling (x, z)
            for side in (lo, hi):
                origin = mid.copy()
                origin[axis] = side[axis]
                half = self.tiles[len(out)] / 2
                out.append((origin, eye[a], eye[b], half, half))
        for p in self.panels:
            out.append((np.array(p.centre), np.array(p.u), np.array(p.v), p.half[0], p.half[1]))
        return out

    # -- geometry -------------------------------------------------------------------------------
    def position(self, t: float) -> np.ndarray:
        return self.dolly.position(t)

    def rotation(self, t: float) -> np.ndarray:
        return rotation_matrix(*self.path.angles(t))

    def directions(self, t: float, pts: torch.Tensor) -> torch.Tensor:
        """World ray directions ``(..., 3)`` of pixels ``pts`` ``(..., 2)`` (camera-space ``z = 1``)."""
        f = self.path.focal(t, self.width)
        dc = torch.stack([(pts[..., 0] - (self.width - 1) / 2) / f, (pts[..., 1] - (self.height - 1) / 2) / f,
                          torch.ones_like(pts[..., 0])], dim=-1)
        return dc @ torch.from_numpy(self.rotation(t)).to(pts.dtype)          # R^T dc, row-vector form

    def cast(self, origin: np.ndarray, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest hit of the rays ``origin + s * dirs``: ``s`` ``(...)`` and surface id ``(...)`` int64."""
        inf = torch.tensor(math.inf, dtype=dirs.dtype)
        s = torch.full(dirs.shape[:-1], math.inf, dtype=dirs.dtype)
        sid = torch.zeros(dirs.shape[:-1], dtype=torch.int64)
        for axis in range(3):                                 # convex box: the nearest exit is the hit
            d = dirs[..., axis]
            up = d > 0
            si = torch.where(up, (self.hi[axis] - origin[axis]) / d, (self.lo[axis] - origin[axis]) / d)
            si = torch.where(d != 0, si, inf)
            nearer = si < s
            s, sid = torch.where(nearer, si, s), torch.where(nearer, 2 * axis + up.long(), sid)
        for k, (c, u, v, hu, hv) in enumerate(self._frames[6:]):
            n = np.cross(u, v)
            sk = float(n @ (c - origin)) / (dirs @ torch.from_numpy(n).to(dirs.dtype))
            rel = origin - c
            a = float(rel @ u) + sk * (dirs @ torch.from_numpy(u).to(dirs.dtype))
            b = float(rel @ v) + sk * (dirs @ torch.from_numpy(v).to(dirs.dtype))
            hit = (sk > 0) & (sk < s) & (a.abs() <= hu) & (b.abs() <= hv)
            s, sid = torch.where(hit, sk, s), torch.where(hit, 6 + k, sid)
        return s, sid

    @staticmethod
    def _group(sid: torch.Tensor) -> torch.Tensor:
        """The box's faces meet without a gap: one continuous surface (-1) apart from the panels."""
        return torch.where(sid < 6, -1, sid)

    def map_points(self, t0: float, t1: float, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the points seen at ``pts`` at ``t0`` appear at ``t1``, and whether they are visible
        there (in front, not hidden, not a mixed silhouette pixel at ``t0``; see the module doc)."""
        c0, c1 = self.position(t0), self.position(t1)
        d0 = self.directions(t0, pts)
        s0, id0 = self.cast(c0, d0)
        x = torch.from_numpy(c0).to(d0.dtype) + s0[..., None] * d0          # (..., 3) hit points
        g0 = self._group(id0)
        mixed = torch.zeros_like(g0, dtype=torch.bool)
        for off in _SUB:
            mixed |= self._group(self.cast(c0, self.directions(t0, pts + torch.tensor(off, dtype=pts.dtype)))[1]) != g0
        rel = x - torch.from_numpy(c1).to(x.dtype)
        xc = rel @ torch.from_numpy(self.rotation(t1)).to(x.dtype).T
        f = self.path.focal(t1, self.width)
        z = xc[..., 2]
        front = z > 1e-6
        zz = torch.where(front, z, torch.ones_like(z))
        target = torch.stack([f * xc[..., 0] / zz + (self.width - 1) / 2,
                              f * xc[..., 1] / zz + (self.height - 1) / 2], dim=-1)
        hidden = self.cast(c1, rel)[0] < 1 - 1e-6            # the segment c1 -> X meets a surface first
        for off in _HALO:                                     # a nearer panel next to the target
            s, sid = self.cast(c1, self.directions(t1, target + torch.tensor(off, dtype=target.dtype)))
            hidden |= (sid >= 6) & (sid != g0) & (s < z * (1 - 1e-3))
        return target, front & ~hidden & ~mixed

    # -- appearance -----------------------------------------------------------------------------
    def render(self, t: float) -> torch.Tensor:
        """The room at time ``t``, ``(3, H, W)`` float32 (mean of 2x2 sub-pixel rays)."""
        origin = self.position(t)
        dirs = self.directions(t, self._sub).reshape(-1, 3)
        s, sid = self.cast(origin, dirs)
        x = torch.from_numpy(origin).to(torch.float32) + s[:, None] * dirs
        f = self.path.focal(t, self.width)
        rgb = torch.zeros(3, x.shape[0], dtype=torch.float32)
        for j, (c, u, v, hu, hv) in enumerate(self._frames):
            sel = sid == j
            if not bool(sel.any()):
                continue
            u32, v32 = torch.from_numpy(u).float(), torch.from_numpy(v).float()
            rel = x[sel] - torch.from_numpy(c).to(torch.float32)
            g = torch.stack([rel @ u32 / hu, rel @ v32 / hv], -1)
            # trilinear mip level: a sub-sample's footprint (half a pixel at depth s), widened by the
            # slant of the surface, in texels (isotropic, so grazing floors blur rather than alias)
            d = dirs[sel]
            cos = (d @ torch.linalg.cross(u32, v32)).abs() / d.norm(dim=-1)
            texels = self._mips[j][0].shape[-1] / (2 * min(hu, hv))              # per metre
            rgb[:, sel] = self._sample(j, g, torch.log2(s[sel] * texels / (2 * f * cos.clamp(min=0.05))))
        return rgb.reshape(3, len(_SUB), self.height, self.width).mean(1)

    def _sample(self, j: int, g: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Texture ``j`` at grid points ``g`` ``(M, 2)``, blended between mip levels ``level`` ``(M,)``:
        ``(3, M)``; mirrored repeats outside ``[-1, 1]``."""
        mips = self._mips[j]
        level = level.clamp(0, len(mips) - 1)
        lo = level.floor().long()
        w = level - lo
        out = torch.empty(3, g.shape[0], dtype=torch.float32)
        for k in lo.unique().tolist():
            m = lo == k
            a, b = (F.grid_sample(mips[min(i, len(mips) - 1)], g[m][None, None], mode="bilinear",
                                  padding_mode="reflection", align_corners=False)[0, :, 0] for i in (k, k + 1))
            out[:, m] = a + w[m] * (b - a)
        return out

    def describe(self) -> dict:
        """JSON-friendly record of the camera and the room (for ``meta.json``)."""
        return {"camera": {"projection": "pinhole", "geometry": "room", **self.path.to_dict(), **self.dolly.to_dict()},
                "room": {"lo": list(self.lo), "hi": list(self.hi), "faces": list(FACES), "tiles": list(self.tiles),
                         "panels": [p.to_dict() for p in self.panels], "textures": list(self.names)}}
