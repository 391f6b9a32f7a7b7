"""Classical dense optical flow between exposure-normalised frames (OpenCV DIS or Farneback).

The classical route to HDR video from alternating exposures (Kang et al., "High Dynamic Range
Video", SIGGRAPH 2003, Sec. 4): bring the neighbour to the reference's exposure, clip it to the
range both frames record, then estimate dense optical flow between frames that now look alike.
The caller does the exposure normalisation and clipping; this module encodes the luminance with a
display gamma (so dark and bright regions carry comparable contrast for the photometric matching
in OpenCV, which works on 8-bit images), runs the flow and checks forward-backward consistency.

Convention: flows are ``(2, H, W)`` float32 numpy arrays, channel 0 = u (x, pixels), 1 = v
(y, pixels). ``dense_flow(ref, mov)`` is the flow from ``ref`` to ``mov``: pixel ``p`` of ``ref``
shows the point at ``p + flow(p)`` in ``mov``, so backward-warping ``mov`` with it (sampling at
``p + flow(p)``, ``align_corners=True``) aligns ``mov`` onto ``ref``.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from vs_hdrvid.ops._checks import check_positive
from vs_hdrvid.ops.color import LUMA_COEFFS, rgb_to_luminance
from vs_hdrvid.ops.warp import flow_warp, forward_backward_confidence, through_similarity, warp_similarity

__all__ = ["FLOW_METHODS", "FLOW_PRESETS", "encode_luminance", "dense_flow", "flow_confidence",
           "flow_luminance", "exposure_flow", "exposure_flow_pair", "aligned_exposure_flow"]

FLOW_METHODS: tuple[str, ...] = ("dis", "farneback")
FLOW_PRESETS: tuple[str, ...] = ("ultrafast", "fast", "medium")

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

# calcOpticalFlowFarneback(pyr_scale, levels, winsize, iterations, poly_n, poly_sigma)
_FARNEBACK_PRESETS = {
    "ultrafast": (0.5, 3, 9, 2, 5, 1.1),
    "fast": (0.5, 4, 15, 3, 5, 1.2),
    "medium": (0.5, 5, 21, 5, 7, 1.5),
}

_LUMA_709 = np.asarray(LUMA_COEFFS["709"], dtype=np.float32)


def encode_luminance(lum: np.ndarray, gamma: float = 2.2) -> np.ndarray:
    """Encode linear luminance in ``[0, 1]`` as 8-bit ``round(255 * clip(Y, 0, 1) ** (1 / gamma))``.

    Args:
        lum: linear luminance ``(H, W)``, or linear RGB ``(H, W, 3)`` reduced with BT.709 weights.
        gamma: display gamma of the encoding; 1 keeps it linear.

    Returns:
        ``(H, W)`` uint8 image.
    """
    lum = np.asarray(lum, dtype=np.float32)
    if lum.ndim == 3 and lum.shape[-1] == 3:
        lum = lum @ _LUMA_709
    if lum.ndim != 2:
        raise ValueError(f"luminance must be (H, W) or (H, W, 3), got {lum.shape}")
    check_positive(gamma, "gamma")
    enc = np.clip(np.nan_to_num(lum, nan=0.0), 0.0, 1.0) ** (1.0 / gamma)
    return np.round(enc * 255.0).astype(np.uint8)


def dense_flow(ref: np.ndarray, mov: np.ndarray, method: str = "dis", preset: str = "medium",
               gamma: float = 2.2) -> np.ndarray:
    """Dense optical flow from ``ref`` to ``mov`` with OpenCV (Kang et al. 2003's classical approach).

    Both images are exposure-normalised, clipped linear luminance in ``[0, 1]``; they are gamma
    encoded to 8 bits (:func:`encode_luminance`) before matching.

    Args:
        ref: reference frame, ``(H, W)`` luminance or ``(H, W, 3)`` linear RGB.
        mov: frame to align onto ``ref``, same shape.
        method: ``"dis"`` (dense inverse search, Kroeger et al. 2016, with variational refinement)
            or ``"farneback"`` (polynomial expansion, Farneback 2003).
        preset: ``"ultrafast"``, ``"fast"`` or ``"medium"`` (speed/quality trade-off).
        gamma: encoding gamma, see :func:`encode_luminance`.

    Returns:
        flow ``(2, H, W)`` float32 from ``ref`` to ``mov``.

    Raises:
        ValueError: unknown method or preset, or mismatched shapes.

    Shape:
        ``(H, W)`` x 2 -> ``(2, H, W)``.

    Convention:
        channel 0 = u (x, pixels), 1 = v (y, pixels); backward-warping ``mov`` aligns it on ``ref``.

    Example:
        >>> img = np.random.default_rng(0).random((32, 32), dtype=np.float32)
        >>> dense_flow(img, img).shape
        (2, 32, 32)
    """
    if method not in FLOW_METHODS:
        raise ValueError(f"method must be one of {FLOW_METHODS}, got {method!r}")
    if preset not in FLOW_PRESETS:
        raise ValueError(f"preset must be one of {FLOW_PRESETS}, got {preset!r}")
    a, b = encode_luminance(ref, gamma), encode_luminance(mov, gamma)
    if a.shape != b.shape:
        raise ValueError(f"ref and mov shapes differ: {a.shape} vs {b.shape}")
    if method == "dis":
        dis = cv2.DISOpticalFlow.create(_DIS_PRESETS[preset])
        flow = dis.calc(a, b, None)
    else:
        pyr_scale, levels, winsize, iterations, poly_n, poly_sigma = _FARNEBACK_PRESETS[preset]
        flow = cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale, levels, winsize, iterations,
                                            poly_n, poly_sigma, cv2.OPTFLOW_FARNEBACK_GAUSSIAN)
    return np.ascontiguousarray(flow.transpose(2, 0, 1), dtype=np.float32)  # (H, W, 2) -> (2, H, W)


def flow_confidence(fw: np.ndarray, bw: np.ndarray, alpha1: float = 0.01,
                    alpha2: float = 0.5) -> np.ndarray:
    """Forward-backward consistency of a flow pair as a confidence in ``[0, 1]``.

    The soft occlusion test of Sundaram et al. (ECCV 2010): with ``b(p) = bw(p + fw(p))``
    (bilinear), ``exp(-|fw + b|**2 / (alpha1 * (|fw|**2 + |b|**2) + alpha2))``; 1 for a perfectly
    consistent pair, ``exp(-1)`` at Sundaram's threshold, 0 where ``p + fw(p)`` leaves the frame.
    A numpy front end to :func:`vs_hdrvid.ops.warp.forward_backward_confidence`.

    Args:
        fw: flow from frame ``a`` to frame ``b``.
        bw: flow from frame ``b`` to frame ``a``.
        alpha1: relative tolerance (fraction of the squared flow magnitudes).
        alpha2: absolute tolerance in squared pixels.

    Returns:
        ``(H, W)`` float32 confidence of ``fw``.

    Shape:
        ``(2, H, W)`` x 2 -> ``(H, W)``.
    """
    fw = np.asarray(fw, dtype=np.float32)
    bw = np.asarray(bw, dtype=np.float32)
    if fw.ndim != 3 or fw.shape[0] != 2 or fw.shape != bw.shape:
        raise ValueError(f"fw and bw must both be (2, H, W), got {fw.shape} and {bw.shape}")
    conf = forward_backward_confidence(torch.from_numpy(fw)[None], torch.from_numpy(bw)[None],
                                       alpha=alpha1, beta=alpha2)  # (1, 1, H, W)
    return conf[0, 0].numpy().astype(np.float32)


def flow_luminance(h: torch.Tensor, level: float) -> np.ndarray:
    """Linear luminance of ``h (3, H, W)`` clipped at ``level`` and normalised to [0, 1], ``(H, W)`` numpy."""
    y = rgb_to_luminance(h)[0]
    return (y / level).clamp(0, 1).float().cpu().numpy()


def exposure_flow(ref: torch.Tensor, mov: torch.Tensor, ev_max: float, method: str = "dis",
                  preset: str = "medium") -> tuple[np.ndarray, np.ndarray]:
    """Flow from ``ref`` to ``mov`` between frames of different exposures, with its confidence.

    Kang et al. 2003's normalisation: both frames (linear radiance on the ``H = f^-1(L) / 2**EV``
    scale) are clipped at the radiance where the longest exposure of the window, ``ev_max``,
    saturates (``0.92**2.2 / 2**ev_max``), so that they look alike, then matched by
    :func:`dense_flow` both ways; the confidence is the forward-backward check of
    :func:`flow_confidence`. The ``classical_flow`` node and the training data of the networks
    that start from this flow both call it, so the two see the same flow.

    Shape:
        ``ref, mov (3, H, W)`` -> flow ``(2, H, W)``, confidence ``(H, W)`` (float32 numpy).
    """
    fw, bw = exposure_flow_pair(ref, mov, ev_max, method, preset)
    return fw, flow_confidence(fw, bw)


def exposure_flow_pair(ref: torch.Tensor, mov: torch.Tensor, ev_max: float, method: str = "dis",
                       preset: str = "medium") -> tuple[np.ndarray, np.ndarray]:
    """Both flows of :func:`exposure_flow`, ``ref -> mov`` and ``mov -> ref`` (the second is
    ``exposure_flow(mov, ref, ev_max)``'s flow), from one normalisation and two DIS runs.

    Shape: ``ref, mov (3, H, W)`` -> two ``(2, H, W)`` float32 numpy.
    """
    level = 2.0 ** -float(ev_max) * 0.92 ** 2.2
    a, b = flow_luminance(ref, level), flow_luminance(mov, level)
    return dense_flow(a, b, method=method, preset=preset), dense_flow(b, a, method=method, preset=preset)


def aligned_exposure_flow(ref: torch.Tensor, nbr: torch.Tensor, m: torch.Tensor, ev_max: float,
                          method: str = "dis", preset: str = "medium") -> torch.Tensor:
    """The whole flow from ``ref`` to ``nbr`` when the similarity ``m`` aligns ``nbr`` on ``ref``.

    ``nbr`` is warped by ``m`` first, :func:`exposure_flow` finds the residual motion, and the
    similarity is composed back in (:func:`~vs_hdrvid.ops.warp.through_similarity`), so that
    backward-warping ``nbr`` by the result aligns it on ``ref``. The confidence is 0 where the
    warped neighbour's pixel came from outside its frame (border padding).

    Shape:
        ``ref, nbr (3, H, W)``, ``m (1, 2, 3)`` -> ``(3, H, W)`` float32: u, v (pixels) and the
        confidence in [0, 1].
    """
    mov, inside = warp_similarity(nbr[None], m, return_mask=True)
    fw, conf = exposure_flow(ref, mov[0], ev_max, method, preset)
    res = torch.from_numpy(fw)[None]  # (1, 2, H, W)
    landed = flow_warp(inside, res)[0, 0].numpy()
    conf = conf * (landed > 0.999)
    total = through_similarity(res, m)
    return torch.cat([total[0], torch.from_numpy(np.asarray(conf, np.float32))[None]])
