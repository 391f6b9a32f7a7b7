"""Moving foreground layers: textured shapes with affine plus smooth non-rigid motion.

A layer is a shape with a texture in its own coordinates ``q`` (pixels of the layer, centred on
the layer). At time ``t`` the screen pixel ``p`` sees the layer point

    u = A(t)^-1 (p - b(t)),        q = u + D_t(u)

with ``A(t) = Rot(theta(t)) diag(sx, sy) exp(zeta t)``, ``b(t) = b0 + v t + a t^2 / 2`` and a smooth
displacement ``D_t(u) = amp [sin(k0 . u + w0 t + phi0), sin(k1 . u + w1 t + phi1)]`` whose Lipschitz
constant ``amp |k|`` stays below 0.3, so ``u = q - D_t(u)`` is a contraction and the inverse map
(needed for flow) is found by fixed-point iteration to float64 precision. The shape's alpha is
analytic (ellipse, blob, polygon; one screen pixel of anti-aliasing), so the flow code can ask for
any layer's coverage at any point exactly.

Emissive layers (light sources) carry radiance far above 1 (``gain``).

Convention: time in frame intervals, point sets ``(..., 2)`` float64 ``(x, y)`` pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LayerMotion", "Layer", "lamp_texture"]


@dataclass(frozen=True)
class LayerMotion:
    """Affine motion ``A(t), b(t)`` and non-rigid displacement ``D_t`` of a layer (see module doc)."""

    b0: tuple[float, float]
    vel: tuple[float, float] = (0.0, 0.0)
    acc: tuple[float, float] = (0.0, 0.0)
    theta0: float = 0.0
    omega: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    zoom_rate: float = 0.0
    warp_amp: float = 0.0
    warp_k: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)   # k0 (x, y), k1 (x, y), per layer px
    warp_w: tuple[float, float] = (0.0, 0.0)                           # temporal frequency, rad / frame
    warp_phase: tuple[float, float] = (0.0, 0.0)

    def affine(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """``A(t)`` (2, 2) and ``b(t)`` (2,) as float64 arrays."""
        th = self.theta0 + self.omega * t
        z = math.exp(self.zoom_rate * t)
        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        a = rot @ np.diag([self.scale[0] * z, self.scale[1] * z])
        b = np.array([self.b0[i] + self.vel[i] * t + 0.5 * self.acc[i] * t * t for i in range(2)])
        return a, b

    def displacement(self, t: float, u: torch.Tensor) -> torch.Tensor:
        """``D_t(u)`` for layer points ``u`` ``(..., 2)``."""
        if self.warp_amp == 0.0:
            return torch.zeros_like(u)
        k = self.warp_k
        d0 = torch.sin(k[0] * u[..., 0] + k[1] * u[..., 1] + self.warp_w[0] * t + self.warp_phase[0])
        d1 = torch.sin(k[2] * u[..., 0] + k[3] * u[..., 1] + self.warp_w[1] * t + self.warp_phase[1])
        return self.warp_amp * torch.stack([d0, d1], dim=-1)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def lamp_texture(color: np.ndarray, size: int = 64) -> np.ndarray:
    """A light source: a bright core fading to a quarter of its radiance at the rim ``(size, size, 3)``."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    r2 = xx * xx + yy * yy
    prof = 0.25 + 0.75 * np.exp(-r2 / 0.25)
    return (prof[..., None] * color).astype(np.float32)


@dataclass
class Layer:
    """A textured shape of radius ``radius`` (layer pixels) moving by ``motion``.

    Args:
        shape: ``"ellipse"``, ``"blob"`` or ``"polygon"``; ``shape_params`` holds the blob's
            harmonics ``(a2, p2, a3, p3, a4, p4)`` or the polygon's ``(n_sides, rotation)``.
        texture: ``(T, T, 3)`` radiance covering ``q`` in ``[-radius, radius]^2``; times ``gain``.
        name: the texture's provenance (``"proc:<family>:<seed>"`` or ``"pano:<name>@x,y,w"``).
    """

    radius: float
    shape: str
    motion: LayerMotion
    texture: np.ndarray
    gain: float = 1.0
    shape_params: tuple[float, ...] = ()
    emissive: bool = False
    name: str = ""
    _tex: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        if self.shape not in ("ellipse", "blob", "polygon"):
            raise ValueError(f"Layer: unknown shape {self.shape!r}")
        tex = torch.from_numpy(np.ascontiguousarray(self.texture, dtype=np.float32)) * self.gain
        self._tex = tex.permute(2, 0, 1)[None].contiguous()            # (1, 3, T, T)

    # -- geometry -------------------------------------------------------------------------------
    def to_layer(self, t: float, pts: torch.Tensor) -> torch.Tensor:
        """Layer coordinates ``q`` of screen points ``pts`` at time ``t``."""
        a, b = self.motion.affine(t)
        ai = np.linalg.inv(a)
        dx, dy = pts[..., 0] - b[0], pts[..., 1] - b[1]
        u = torch.stack([ai[0, 0] * dx + ai[0, 1] * dy, ai[1, 0] * dx + ai[1, 1] * dy], dim=-1)
        return u + self.motion.displacement(t, u)

    def from_layer(self, t: float, q: torch.Tensor, iters: int = 40) -> torch.Tensor:
        """Screen positions at time ``t`` of layer points ``q`` (inverse of :meth:`to_layer`)."""
        u = q.clone()
        if self.motion.warp_amp != 0.0:
            for _ in range(iters):
                u = q - self.motion.displacement(t, u)
        a, b = self.motion.affine(t)
        return torch.stack([a[0, 0] * u[..., 0] + a[0, 1] * u[..., 1] + b[0],
                            a[1, 0] * u[..., 0] + a[1, 1] * u[..., 1] + b[1]], dim=-1)

    def screen_scale(self, t: float) -> float:
        a, _ = self.motion.affine(t)
        return math.sqrt(abs(np.linalg.det(a)))

    def alpha_at(self, t: float, q: torch.Tensor) -> torch.Tensor:
        """Coverage in [0, 1] of layer points ``q``: analytic shape, one screen pixel of smoothing."""
        r = torch.sqrt(q[..., 0] ** 2 + q[..., 1] ** 2)
        phi = torch.atan2(q[..., 1], q[..., 0])
        if self.shape == "ellipse":
            rb = torch.ones_like(r)
        elif self.shape == "blob":
            p = self.shape_params
            rb = 1 + sum(p[2 * i] * torch.cos((i + 2) * phi + p[2 * i + 1]) for i in range(len(p) // 2))
        else:
            n, rot = int(self.shape_params[0]), self.shape_params[1]
            seg = 2 * math.pi / n
            rb = math.cos(math.pi / n) / torch.cos(torch.remainder(phi - rot, seg) - math.pi / n)
        sdf = (r - self.radius * rb) * self.screen_scale(t)
        return torch.clamp(0.5 - sdf, 0.0, 1.0)

    def bbox(self, t: float, height: int, width: int) -> tuple[int, int, int, int] | None:
        """Integer screen box ``(y0, y1, x0, x1)`` (exclusive ends) holding the layer, or None."""
        a, b = self.motion.affine(t)
        e = 1.4 * self.radius + self.motion.warp_amp + 2.0
        c = np.array([[-e, -e], [e, -e], [-e, e], [e, e]]) @ a.T + b
        x0, y0 = np.floor(c.min(0)).astype(int) - 1
        x1, y1 = np.ceil(c.max(0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        return None if x0 >= x1 or y0 >= y1 else (int(y0), int(y1), int(x0), int(x1))

    # -- appearance -----------------------------------------------------------------------------
    def render(self, t: float, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple] | None:
        """Radiance ``(3, h, w)``, coverage ``(h, w)`` and box of the layer on the pixel ``grid``."""
        h, w = grid.shape[:2]
        box = self.bbox(t, h, w)
        if box is None:
            return None
        y0, y1, x0, x1 = box
        q = self.to_layer(t, grid[y0:y1, x0:x1])
        alpha = self.alpha_at(t, q).to(torch.float32)
        g = (q / self.radius).to(torch.float32)[None]                   # (1, h, w, 2)
        rgb = F.grid_sample(self._tex, g, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
        return rgb, alpha, box

    def describe(self) -> dict:
        """JSON-friendly record of the layer (for ``meta.json``)."""
        return {"texture": self.name, "shape": self.shape, "radius": round(self.radius, 3),
                "gain": self.gain, "emissive": self.emissive, "motion": self.motion.to_dict()}
