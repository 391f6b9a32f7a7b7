"""A Bayer-sensor camera model, for a noise domain the DeAltHDR recipes never show (``shifted`` preset).

The training recipes add heteroscedastic Gaussian noise ``N(0, lambda_read + lambda_shot x)``
(DeAltHDR Appendix A, Eq. A) independently to every pixel and channel of the linear RGB signal. A
real camera (DeAltHDR section 4.2: an iPhone shot at a fixed ISO) records one colour per photosite
and processes it, which gives noise of a different structure. Here, for the exposed signal
``x = clip(H * 2**EV, 0, 1)`` (so saturation and the ground truth mean what they mean in training):

1. Unprocessing (Brooks et al. 2019, the UPI that DeAltHDR cites): camera RGB ``c = G^-1 M^-1 x``
   with a colour matrix ``M = (1 + s) I - s J / 3`` (rows sum to 1; the camera's overlapping
   spectral sensitivities are desaturated, ``M`` re-saturates) and white-balance gains
   ``G = diag(g_r, 1, g_b)``; ``c`` is sampled on an RGGB colour filter array, ``y = CFA(c)``.
2. Sensor noise on the mosaic, with the photo-response non-uniformity ``u`` (per photosite) and
   column offsets ``o_col`` fixed for the whole scene (one sensor), row offsets new every frame:

       y_n = Poisson(Q y (1 + u)) / Q + N(0, r^2) + o_row + o_col,
       u ~ N(0, p^2),  o_row ~ N(0, r_row^2),  o_col ~ N(0, r_col^2)

   so over a flat patch ``Var[y_n] = y / Q + p^2 y^2 + r^2 + r_row^2 + r_col^2`` (:meth:`raw_variance`):
   Poisson (discrete, skewed when ``Q y`` is a few electrons), a quadratic fixed-pattern term and
   row/column banding; Eq. A has neither the quadratic term nor any spatial structure.
3. A 12-bit ADC (``clip`` to ``[0, 1]``), bilinear demosaicing (noise becomes spatially and
   cross-channel correlated), white balance ``G`` (red and blue noise amplified by their gains),
   colour matrix ``M`` (channels mixed), ``clip``, then the training recipe's container: 10-bit
   linear quantisation, gamma 2.2 and a 16-bit PNG.

Parameter ranges (:data:`SENSOR_RANGES`): ``Q`` (electrons at raw full scale) spans the same
signal-to-noise as Eq. B's ``1 / lambda_shot`` (day ISO 50-400: 2000-8000; night ISO 800-3200:
200-800), but read noise is independent of ``Q`` (Eq. B ties them), plus the terms above. White
balance and colour matrix follow UPI's ranges (red gain 1.9-2.4, blue 1.5-1.9).

Convention: images ``(H, W, 3)`` float; the mosaic ``(H, W)``; ``rng`` a ``numpy.random.Generator``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vs_hdrvid.synth.degrade import crf_gamma, expose, quantize

__all__ = ["SENSOR_RANGES", "SensorModel", "sample_sensor", "cfa_masks", "mosaic", "demosaic_bilinear",
           "colour_matrix"]

#: Ranges the per-scene sensor parameters are drawn from (log-uniform for ``electrons`` and ``read``,
#: uniform otherwise); ``row``/``col`` are fractions of ``read``.
SENSOR_RANGES = {
    "day": {"electrons": (2000.0, 8000.0), "read": (0.001, 0.003), "row": (0.15, 0.35), "col": (0.1, 0.25),
            "prnu": (0.005, 0.015), "wb_r": (1.9, 2.4), "wb_b": (1.5, 1.9), "ccm": (0.2, 0.5)},
    "night": {"electrons": (200.0, 800.0), "read": (0.003, 0.008), "row": (0.2, 0.4), "col": (0.1, 0.25),
              "prnu": (0.005, 0.015), "wb_r": (1.9, 2.4), "wb_b": (1.5, 1.9), "ccm": (0.2, 0.5)},
}

#: RGGB: channel index of the photosite at (row % 2, col % 2)
_RGGB = ((0, 1), (1, 2))
_K_G = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float64) / 4
_K_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float64) / 4


def colour_matrix(s: float) -> np.ndarray:
    """``M = (1 + s) I - s J / 3`` (3, 3): rows sum to 1, so grey stays grey; ``M^-1 = (I + s J / 3) / (1 + s)``."""
    return (1.0 + s) * np.eye(3) - s / 3.0 * np.ones((3, 3))


def cfa_masks(height: int, width: int) -> np.ndarray:
    """RGGB sampling masks ``(3, H, W)`` float64 (one 1 per photosite)."""
    m = np.zeros((3, height, width))
    for dy in (0, 1):
        for dx in (0, 1):
            m[_RGGB[dy][dx], dy::2, dx::2] = 1.0
    return m


def mosaic(rgb: np.ndarray) -> np.ndarray:
    """The RGGB mosaic ``(H, W)`` of ``rgb`` ``(H, W, 3)``: each photosite keeps its filter's channel."""
    return np.einsum("chw,hwc->hw", cfa_masks(*rgb.shape[:2]), rgb)


def _conv3(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """3x3 correlation with mirror padding (``reflect`` keeps the CFA parity at the borders)."""
    p = np.pad(img, 1, mode="reflect")
    h, w = img.shape
    out = np.zeros_like(img)
    for dy in range(3):
        for dx in range(3):
            if k[dy, dx]:
                out += k[dy, dx] * p[dy:dy + h, dx:dx + w]
    return out


def demosaic_bilinear(raw: np.ndarray) -> np.ndarray:
    """Bilinear demosaicing of an RGGB mosaic ``(H, W)`` -> ``(H, W, 3)`` (normalised convolution).

    Each channel is the weighted mean of its own photosites in the 3x3 neighbourhood (kernels
    ``[[0,1,0],[1,4,1],[0,1,0]] / 4`` for green, ``[[1,2,1],[2,4,2],[1,2,1]] / 4`` for red and blue);
    measured photosites are kept; exact for signals linear in x and y.
    """
    masks = cfa_masks(*raw.shape)
    out = np.empty(raw.shape + (3,))
    for c in range(3):
        k = _K_G if c == 1 else _K_RB
        out[..., c] = _conv3(raw * masks[c], k) / _conv3(masks[c], k)
    return out


@dataclass(frozen=True)
class SensorModel:
    """One scene's camera (see the module docstring for the model).

    Args:
        kind: ``"sensor_day"`` or ``"sensor_night"``.
        electrons: ``Q``, photoelectrons at raw full scale (the ISO setting).
        read: read-noise std ``r`` (raw full scale = 1).
        row, col: std of the per-frame row offsets and of the fixed column offsets.
        prnu: std ``p`` of the fixed per-photosite gain (photo-response non-uniformity).
        wb: white-balance gains ``(g_r, 1, g_b)``.
        ccm: colour-matrix strength ``s``.
        pattern_seed: seed of the fixed patterns (PRNU map, column offsets).
        adc_bits, linear_bits, png_bits: ADC, linear container and PNG bit depths.
    """

    kind: str
    electrons: float
    read: float
    row: float
    col: float
    prnu: float
    wb: tuple[float, float, float]
    ccm: float
    pattern_seed: int
    adc_bits: int = 12
    linear_bits: int = 10
    png_bits: int = 16

    def __post_init__(self):
        if self.kind not in ("sensor_day", "sensor_night"):
            raise ValueError(f"SensorModel: kind must be sensor_day or sensor_night, got {self.kind!r}")
        if self.electrons <= 0 or min(self.read, self.row, self.col, self.prnu) < 0:
            raise ValueError("SensorModel: electrons must be positive and noise stds non-negative")

    def raw_variance(self, y: np.ndarray | float) -> np.ndarray | float:
        """Variance of a noisy photosite over a flat patch of raw signal ``y`` (before the ADC):
        ``y / Q + p^2 y^2 + r^2 + r_row^2 + r_col^2``."""
        return y / self.electrons + (self.prnu * y) ** 2 + self.read ** 2 + self.row ** 2 + self.col ** 2

    def fixed_patterns(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The sensor's PRNU map ``(H, W)`` and column offsets ``(W,)`` (the same for every frame)."""
        rng = np.random.default_rng(self.pattern_seed)
        return rng.standard_normal((height, width)) * self.prnu, rng.standard_normal(width) * self.col

    def sensor_noise(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noisy mosaic (before the ADC) of the clean mosaic ``y`` ``(H, W)`` (step 2 of the model)."""
        h, w = y.shape
        prnu, col = self.fixed_patterns(h, w)
        lam = np.clip(y * (1.0 + prnu), 0.0, None) * self.electrons
        out = rng.poisson(lam) / self.electrons
        out += rng.standard_normal((h, w)) * self.read
        out += rng.standard_normal((h, 1)) * self.row + col[None, :]
        return out

    def apply(self, h: np.ndarray, ev: float, rng: np.random.Generator) -> np.ndarray:
        """Scene radiance ``h`` (``H`` scale, time-integrated) -> stored ``uint16`` LDR frame."""
        x = expose(h.astype(np.float64), ev)
        m = colour_matrix(self.ccm)
        g = np.asarray(self.wb, np.float64)
        cam = (x @ np.linalg.inv(m).T) / g                        # c = G^-1 M^-1 x, in [0, 1]
        raw = quantize(np.clip(self.sensor_noise(mosaic(cam), rng), 0.0, 1.0), self.adc_bits)
        rgb = (demosaic_bilinear(raw) * g) @ m.T
        lin = quantize(np.clip(rgb, 0.0, 1.0), self.linear_bits)
        q = 2 ** self.png_bits - 1
        return np.round(crf_gamma(lin) * q).astype(np.uint8 if self.png_bits == 8 else np.uint16)

    def to_dict(self) -> dict:
        return {"model": "poisson-gaussian-bayer", "domain": "RGGB mosaic after UPI-style unprocessing",
                "kind": self.kind, "electrons_full_scale": self.electrons, "read_std": self.read,
                "row_std": self.row, "col_std": self.col, "prnu_std": self.prnu, "wb_gains": list(self.wb),
                "ccm_strength": self.ccm, "ccm": colour_matrix(self.ccm).tolist(), "cfa": "RGGB",
                "demosaic": "bilinear", "pattern_seed": self.pattern_seed, "adc_bits": self.adc_bits,
                "linear_bits": self.linear_bits, "png_bits": self.png_bits,
                "raw_variance": "y/Q + prnu^2 y^2 + read^2 + row^2 + col^2 (y: raw photosite signal)",
                "reference": "vs_hdrvid.synth.sensor (UPI unprocessing, Brooks et al. 2019)"}


def sample_sensor(kind: str, rng: np.random.Generator) -> SensorModel:
    """Draw a :class:`SensorModel` for ``kind`` (``"sensor_day"`` or ``"sensor_night"``) from :data:`SENSOR_RANGES`."""
    base = kind.removeprefix("sensor_")
    if not kind.startswith("sensor_") or base not in SENSOR_RANGES:
        raise ValueError(f"sample_sensor: kind must be sensor_day or sensor_night, got {kind!r}")
    p = SENSOR_RANGES[base]

    def logu(lo_hi):
        return float(math.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]))))

    electrons, read = logu(p["electrons"]), logu(p["read"])
    return SensorModel(kind, electrons=electrons, read=read, row=read * float(rng.uniform(*p["row"])),
                       col=read * float(rng.uniform(*p["col"])), prnu=float(rng.uniform(*p["prnu"])),
                       wb=(float(rng.uniform(*p["wb_r"])), 1.0, float(rng.uniform(*p["wb_b"]))),
                       ccm=float(rng.uniform(*p["ccm"])), pattern_seed=int(rng.integers(2 ** 63)))
