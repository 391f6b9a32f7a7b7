"""ColorVideoVDP (Mantiuk et al., SIGGRAPH 2024) on HDR reconstructions, offline on the CPU.

``pycvvdp`` ships its display models and calibrated parameters inside the wheel
(``pycvvdp/vvdp_data``); the plain ``cvvdp`` metric used here reads nothing from the network.

Mapping to absolute luminance: the evaluation scale ``clip(H / H_sat, 0, 1)`` (the same
normalisation as PSNR-mu, ``H_sat = 1 / 2**min(EV)``) is shown on the display with ``H_sat`` at
``peak_nits`` (1000 cd/m2 by default, below the 1500 cd/m2 peak of ``standard_hdr_pq`` so the
display model never clips), i.e. ``Y = peak_nits * clip(H / H_sat, 0, 1)`` in BT.709 linear RGB.
For a PQ display the RGB is converted to BT.2020 primaries and PQ (ST 2084) encoded; for a linear
display (``standard_hdr_linear``) it is passed as absolute BT.709 values.

Convention: frames are ``(T, 3, H, W)`` linear RGB tensors (or ``(T, H, W, 3)`` numpy arrays) on the
project's radiometric scale. JOD is 10 for identical videos and drops as differences grow visible.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vs_hdrvid.ops.color import bt709_to_bt2020

__all__ = ["DEFAULT_PEAK_NITS", "hdr_to_display", "jod"]

#: Luminance (cd/m2) at which the saturation radiance ``H_sat`` is shown.
DEFAULT_PEAK_NITS: float = 1000.0


def _import_pycvvdp():
    try:
        import pycvvdp
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("ColorVideoVDP needs the 'cvvdp' package: pip install 'vs-hdrvid[eval]' "
                          "(or pip install cvvdp), or pass cvvdp=False / --no-cvvdp") from e
    return pycvvdp


@lru_cache(maxsize=4)
def _metric(display: str, device: str):
    pycvvdp = _import_pycvvdp()
    return pycvvdp.cvvdp(display_name=display, device=torch.device(device), quiet=True)


def _pq_encode(lum: Tensor) -> Tensor:
    """SMPTE ST 2084 inverse EOTF: absolute cd/m2 -> code values in ``[0, 1]``."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = (lum.clamp(0.0, 10000.0) / 10000.0) ** m1
    return ((c1 + c2 * y) / (1 + c3 * y)) ** m2


def _as_video(x: Tensor | np.ndarray, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).float()
    if t.dim() == 4 and t.shape[1] != 3 and t.shape[-1] == 3:
        t = t.permute(0, 3, 1, 2)  # (T, H, W, 3) -> (T, 3, H, W)
    if t.dim() != 4 or t.shape[1] != 3:
        raise ValueError(f"{name} must be (T, 3, H, W) or (T, H, W, 3), got {tuple(t.shape)}")
    return t


def hdr_to_display(frames: Tensor, h_sat: float, eotf: str = "PQ",
                   peak_nits: float = DEFAULT_PEAK_NITS) -> Tensor:
    """Map linear HDR on the evaluation scale to the pixel values a cvvdp display model expects.

    Args:
        frames: linear BT.709 RGB, ``H = f^-1(L) / 2**EV`` scale.
        h_sat: saturation radiance ``1 / 2**min(EV)``, shown at ``peak_nits``.
        eotf: ``"PQ"`` (BT.2020 primaries, ST 2084 code values) or ``"linear"`` (BT.709, cd/m2).
        peak_nits: luminance of ``H_sat`` in cd/m2.

    Returns:
        display values, same shape.

    Shape:
        ``(T, 3, H, W)`` -> ``(T, 3, H, W)``.
    """
    lum = peak_nits * (frames / h_sat).clamp(0.0, 1.0)
    if eotf == "linear":
        return lum
    if eotf == "PQ":
        return _pq_encode(bt709_to_bt2020(lum).clamp(min=0.0))
    raise ValueError(f"unsupported display EOTF {eotf!r}: use a PQ or linear HDR display model")


def jod(pred_frames: Tensor | np.ndarray, gt_frames: Tensor | np.ndarray, h_sat: float,
        display: str = "standard_hdr_pq", fps: float = 30.0, peak_nits: float = DEFAULT_PEAK_NITS,
        max_frames: int | None = None, max_side: int | None = None, device: str = "cpu") -> float:
    """ColorVideoVDP quality of a reconstructed HDR video against the ground truth, in JOD.

    Args:
        pred_frames: reconstruction ``O_0 .. O_{T-1}``, linear HDR.
        gt_frames: ground truth, same shape.
        h_sat: saturation radiance ``1 / 2**min(EV)``; see the module docstring for the mapping.
        display: a cvvdp HDR display model with a PQ or linear colour space
            (``standard_hdr_pq``: 30-inch 4K, 1500 cd/m2 peak, 10 lux ambient).
        fps: frame rate of the video (a single frame is evaluated as an image).
        peak_nits: luminance at which ``H_sat`` is shown.
        max_frames: evaluate only the first ``max_frames`` frames (speed); ``None`` = all.
        max_side: downscale (area) so the longer side is at most this many pixels (speed);
            ``None`` = full resolution.
        device: torch device cvvdp runs on.

    Returns:
        JOD (10 = identical).

    Raises:
        ImportError: ``cvvdp`` is not installed.
        ValueError: shapes differ or the display is not an HDR (PQ/linear) model.

    Shape:
        ``(T, 3, H, W)`` or ``(T, H, W, 3)``.
    """
    pred, gt = _as_video(pred_frames, "pred_frames"), _as_video(gt_frames, "gt_frames")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    if max_frames is not None:
        pred, gt = pred[:max_frames], gt[:max_frames]
    h, w = pred.shape[-2:]
    if max_side is not None and max(h, w) > max_side:
        size = (max(1, round(h * max_side / max(h, w))), max(1, round(w * max_side / max(h, w))))
        pred = F.interpolate(pred, size=size, mode="area")
        gt = F.interpolate(gt, size=size, mode="area")
    metric = _metric(display, device)
    eotf = metric.display_photometry.EOTF
    test = hdr_to_display(pred, h_sat, eotf, peak_nits).permute(1, 0, 2, 3)[None]  # (1, 3, T, H, W)
    ref = hdr_to_display(gt, h_sat, eotf, peak_nits).permute(1, 0, 2, 3)[None]
    rate = fps if test.shape[2] > 1 else 0
    with torch.no_grad():
        q, _ = metric.predict(test.contiguous(), ref.contiguous(), dim_order="BCFHW", frames_per_second=rate)
    return float(q)
