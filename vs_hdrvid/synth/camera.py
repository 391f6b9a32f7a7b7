"""Virtual camera moving through an HDR panorama (or in front of a flat plate).

A rotating pinhole camera: the pixel ``p = (x, y)`` (pixel-index coordinates, principal point at
the image centre ``((W - 1) / 2, (H - 1) / 2)``) sees the world direction
``d = R(t)^T K(t)^-1 [x, y, 1]^T``; ``R(t)`` composes yaw, pitch, roll and a handheld shake, ``K(t)``
holds the focal length (zoom). The background is looked up at ``d`` in the equirectangular
panorama (longitude ``atan2(dx, dz)``, latitude ``atan2(dy, |(dx, dz)|)``, y down) or, for a flat
plate, at the intersection of ``d`` with the plane ``z = 1``. Because the camera only rotates, the
background flow between two times is exact: ``p' = pi(K(t1) R(t1) d)``.

Softness: the blender panoramas have 1024 px over 360 degrees (2.8 px/degree). A 480 px wide view
with a 60 degree field of view samples 8 px/degree, so views are upsampled ~3x (about 8x at 960 px
and 40 degrees) and look soft; foreground layers carry the fine texture. Where the view is coarser
than the panorama, the panorama is box-filtered by a power of two first (no aliasing).

Convention: time ``t`` in frame intervals (frame ``i`` is at ``t = i``), angles in radians,
images ``(H, W, 3)`` float32, point sets ``(..., 2)`` float64 ``(x, y)`` pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vs_hdrvid.synth.shake import catmull_rom

__all__ = ["CameraPath", "Background", "rotation_matrix", "pixel_grid"]


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World-to-camera rotation ``Rz(roll) @ Rx(pitch) @ Ry(yaw)`` (camera: x right, y down, z forward)."""
    cy, sy, cp, sp, cr, sr = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch),
                              math.cos(roll), math.sin(roll))
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def pixel_grid(height: int, width: int) -> torch.Tensor:
    """Pixel-centre coordinates ``(H, W, 2)`` float64, channel 0 = x, 1 = y."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                            torch.arange(width, dtype=torch.float64), indexing="ij")
    return torch.stack([xs, ys], dim=-1)


@dataclass(frozen=True)
class CameraPath:
    """A camera trajectory: constant rates plus acceleration, exponential zoom and shake.

    ``angle(t) = angle0 + rate * t + acc * t**2 / 2 + sum_k amp_k sin(2 pi freq_k t + phase_k)
    [+ jitter(t)]`` for yaw, pitch and roll; ``hfov(t) = 2 atan(tan(hfov0 / 2) exp(-zoom_rate * t))``.
    The slow sinusoids are the smooth shake of the training recipes; ``jitter`` (knots every
    ``jitter_dt`` from ``jitter_t0``, axis-major, Catmull-Rom between them, see
    :mod:`vs_hdrvid.synth.shake`) is the optional handheld shake that bends the path inside an exposure.
    """

    angle0: tuple[float, float, float]
    rate: tuple[float, float, float] = (0.0, 0.0, 0.0)
    acc: tuple[float, float, float] = (0.0, 0.0, 0.0)
    hfov0: float = math.radians(60.0)
    zoom_rate: float = 0.0
    shake_amp: tuple[float, ...] = ()      # 3 * K amplitudes (axis-major)
    shake_freq: tuple[float, ...] = ()     # cycles per frame interval
    shake_phase: tuple[float, ...] = ()
    jitter: tuple[float, ...] = ()         # 3 * N knots (axis-major), radians
    jitter_t0: float = 0.0
    jitter_dt: float = 0.0

    def angles(self, t: float) -> tuple[float, float, float]:
        out = []
        k = len(self.shake_amp) // 3
        for a in range(3):
            v = self.angle0[a] + self.rate[a] * t + 0.5 * self.acc[a] * t * t
            for j in range(a * k, (a + 1) * k):
                v += self.shake_amp[j] * math.sin(2 * math.pi * self.shake_freq[j] * t + self.shake_phase[j])
            if self.jitter:
                n = len(self.jitter) // 3
                v += catmull_rom(self.jitter[a * n:(a + 1) * n], self.jitter_t0, self.jitter_dt, t)
            out.append(v)
        return out[0], out[1], out[2]

    def focal(self, t: float, width: int) -> float:
        """Focal length in pixels at time ``t`` for an image ``width`` pixels wide."""
        return (width / 2) / (math.tan(self.hfov0 / 2) * math.exp(-self.zoom_rate * t))

    def to_dict(self) -> dict:
        """JSON-friendly fields; the jitter fields only when there is jitter (older records stay as they were)."""
        skip = () if self.jitter else ("jitter", "jitter_t0", "jitter_dt")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if k not in skip}


class Background:
    """The static far scene seen by a :class:`CameraPath`: an equirectangular panorama or a plate.

    Args:
        frames: source images ``(Hs, Ws, 3)``; more than one makes a plate sequence played at one
            source frame per frame interval from ``seq_offset``, blended linearly between frames.
        projection: ``"equirect"`` or ``"plane"``.
        path: the camera trajectory.
        width, height: output size in pixels.
        gain: radiance scale applied to the source; results are clamped to ``[0, clamp]``.
        plate_hfov: horizontal field of view covered by a plate (radians).
    """

    def __init__(self, frames: list[np.ndarray], projection: str, path: CameraPath, width: int,
                 height: int, gain: float = 1.0, clamp: float = 6e4, plate_hfov: float = math.radians(90),
                 seq_offset: float = 0.0):
        if projection not in ("equirect", "plane"):
            raise ValueError(f"Background: projection must be 'equirect' or 'plane', got {projection!r}")
        self.projection, self.path, self.width, self.height = projection, path, width, height
        self.seq_offset = seq_offset
        hs, ws = frames[0].shape[:2]
        self.plate_a = math.tan(plate_hfov / 2)
        self.plate_b = self.plate_a * hs / ws
        src_px_per_rad = ws / (2 * math.pi) if projection == "equirect" else ws / (2 * self.plate_a)
        ratio = src_px_per_rad / path.focal(0.0, width)
        self.pool = 2 ** max(0, int(math.floor(math.log2(ratio)))) if ratio > 1 else 1
        self.frames = [self._prepare(f, gain, clamp) for f in frames]
        self._grid = pixel_grid(height, width).to(torch.float32)     # rendering runs in float32

    def _prepare(self, img: np.ndarray, gain: float, clamp: float) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
        if self.pool > 1:
            h, w = x.shape[-2:]
            x = F.avg_pool2d(x[..., :h - h % self.pool, :w - w % self.pool], self.pool)
        x = torch.clamp(x * gain, 0.0, clamp)
        if self.projection == "equirect":                 # 2 wrapped columns each side for longitude
            x = torch.cat([x[..., -2:], x, x[..., :2]], dim=-1)
        return x.contiguous()                             # (1, 3, Hs, Ws)

    def rotation(self, t: float) -> np.ndarray:
        return rotation_matrix(*self.path.angles(t))

    def directions(self, t: float, pts: torch.Tensor) -> torch.Tensor:
        """World directions ``(..., 3)`` of pixel positions ``pts`` ``(..., 2)`` at time ``t``."""
        f = self.path.focal(t, self.width)
        r = self.rotation(t)
        dc = ((pts[..., 0] - (self.width - 1) / 2) / f, (pts[..., 1] - (self.height - 1) / 2) / f,
              torch.ones_like(pts[..., 0]))
        return torch.stack([r[0, i] * dc[0] + r[1, i] * dc[1] + r[2, i] * dc[2] for i in range(3)], dim=-1)

    def project(self, t: float, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel positions ``(..., 2)`` of world directions at time ``t`` and a mask (in front)."""
        f = self.path.focal(t, self.width)
        r = self.rotation(t)
        dc = [r[i, 0] * dirs[..., 0] + r[i, 1] * dirs[..., 1] + r[i, 2] * dirs[..., 2] for i in range(3)]
        front = dc[2] > 1e-6
        z = torch.where(front, dc[2], torch.ones_like(dc[2]))
        pts = torch.stack([f * dc[0] / z + (self.width - 1) / 2, f * dc[1] / z + (self.height - 1) / 2], -1)
        return pts, front

    def map_points(self, t0: float, t1: float, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the background points seen at ``pts`` at ``t0`` appear at ``t1`` (exact)."""
        return self.project(t1, self.directions(t0, pts))

    def _source_grid(self, dirs: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """grid_sample coordinates ``(1, H, W, 2)`` of world directions in a prepared source."""
        dx, dy, dz = dirs[..., 0], dirs[..., 1], dirs[..., 2]
        if self.projection == "equirect":
            hp, wp = frame.shape[-2], frame.shape[-1] - 4
            lon = torch.atan2(dx, dz)
            lat = torch.atan2(dy, torch.sqrt(dx * dx + dz * dz))
            u = (lon + math.pi) / (2 * math.pi) * wp - 0.5 + 2.0
            v = (lat + math.pi / 2) / math.pi * hp - 0.5
            g = torch.stack([2 * u / (wp + 3) - 1, 2 * v / (hp - 1) - 1], dim=-1)
        else:
            z = torch.clamp(dz, min=1e-6)
            g = torch.stack([dx / z / self.plate_a, dy / z / self.plate_b], dim=-1)
        return g[None].to(torch.float32)

    def render(self, t: float) -> torch.Tensor:
        """The background at time ``t``, ``(3, H, W)`` float32."""
        dirs = self.directions(t, self._grid)
        if len(self.frames) == 1:
            src = self.frames[0]
        else:
            s = min(max(self.seq_offset + t, 0.0), len(self.frames) - 1.0)
            i0 = min(int(math.floor(s)), len(self.frames) - 2)
            w = s - i0
            src = self.frames[i0] * (1 - w) + self.frames[i0 + 1] * w
        g = self._source_grid(dirs, src)
        align = self.projection == "equirect"
        return F.grid_sample(src, g, mode="bilinear", padding_mode="border", align_corners=align)[0]

    def describe(self) -> dict:
        """JSON-friendly record of the camera (for ``meta.json``)."""
        return {"camera": {"projection": self.projection, "prefilter": self.pool, **self.path.to_dict()}}
