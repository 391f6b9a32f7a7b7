"""Warping by dense flow and by 2x3 similarity/affine matrices; the project's one place for both.

Convention:
    Pixel coordinates: x right, y down, pixel centres at integers ``0 .. W-1`` / ``0 .. H-1``
    (``align_corners=True`` in ``grid_sample`` terms).

    A 2x3 matrix ``M`` maps a point ``p`` of frame A to ``M @ [p, 1]`` in frame B. Warping A into
    B's frame is backward sampling ``out(q) = A(M^-1 q)``, exactly the semantics of
    ``kornia.geometry.transform.warp_affine(A, M, dsize, align_corners=True)``.

    Flow is ``(B, 2, H, W)``, channel 0 = u (x displacement in pixels), 1 = v. A flow "from n to m"
    gives, for each pixel ``p`` of n, the position ``p + flow(p)`` of the same point in m, so
    ``flow_warp(m, flow)`` aligns m onto n.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from torch import Tensor

from .bands import row_bands

__all__ = [
    "flow_warp",
    "resize_flow",
    "warp_similarity",
    "SimilarityBands",
    "similarity_to_flow",
    "compose_affine",
    "invert_affine",
    "similarity_matrix",
    "forward_backward_confidence",
    "through_similarity",
    "align_to_ref",
]


def _check_image(x: object, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float (B, C, H, W) tensor, got {_desc(x)}")


def _check_flow(flow: object, name: str = "flow") -> None:
    if not isinstance(flow, Tensor) or flow.dim() != 4 or flow.shape[1] != 2 or not flow.is_floating_point():
        raise ValueError(f"{name} must be a float (B, 2, H, W) tensor, got {_desc(flow)}")


def _check_affine(m: object, name: str = "M") -> None:
    if not isinstance(m, Tensor) or m.dim() != 3 or m.shape[-2:] != (2, 3):
        raise ValueError(f"{name} must be a (B, 2, 3) tensor, got {_desc(m)}")


def _desc(x: object) -> str:
    return f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__


def _sample_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sampling grids need float32 at least: float16 resolves only ~0.5 px at 1080p."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _pixel_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(1, 2, H, W)`` pixel coordinates (x, y)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                            torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack((xs, ys))[None]


def _normalise_grid(pos: Tensor, h: int, w: int) -> Tensor:
    """Pixel positions ``(B, 2, H, W)`` -> ``grid_sample`` grid ``(B, H, W, 2)`` (align_corners=True)."""
    gx = pos[:, 0] * (2.0 / max(w - 1, 1)) - 1.0
    gy = pos[:, 1] * (2.0 / max(h - 1, 1)) - 1.0
    return torch.stack((gx, gy), dim=-1)


def flow_warp(x: Tensor, flow: Tensor, interpolation: str = "bilinear", padding_mode: str = "border") -> Tensor:
    """Backward-warp ``x`` with a dense flow: ``out(p) = x(p + flow(p))``.

    Args:
        x: image to sample (frame m).
        flow: flow from the output frame n to m, in pixels.
        interpolation: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``.
        padding_mode: ``"border"``, ``"zeros"`` or ``"reflection"``.

    Returns:
        ``x`` aligned onto the flow's frame, in ``x``'s dtype (float16 is sampled in float32).

    Shape:
        x ``(B, C, H, W)``, flow ``(B, 2, H, W)`` -> ``(B, C, H, W)``.

    Convention:
        pixel centres at integers, ``grid_sample(..., align_corners=True)``.
    """
    _check_image(x)
    _check_flow(flow)
    if flow.shape[0] != x.shape[0] or flow.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"flow {tuple(flow.shape)} must match x {tuple(x.shape)} in batch and size")
    h, w = x.shape[-2:]
    dtype = _sample_dtype(x.dtype)
    pos = _pixel_grid(h, w, flow.device, dtype) + flow.to(dtype)
    grid = _normalise_grid(pos, h, w)
    out = F.grid_sample(x.to(dtype), grid, mode=interpolation, padding_mode=padding_mode, align_corners=True)
    return out.to(x.dtype)


def resize_flow(flow: Tensor, size: tuple[int, int], interpolation: str = "bilinear",
                align_corners: bool = False) -> Tensor:
    """Resize a flow field and rescale its vectors to the new pixel size.

    Args:
        flow: ``(B, 2, H, W)`` flow in pixels.
        size: output ``(H', W')``.
        interpolation: ``F.interpolate`` mode.
        align_corners: the sampling convention the matching *images* were resized with. False
            (default) is the pixel-area convention of ``F.interpolate(align_corners=False)``,
            kornia's ``pyrdown``/``resize`` and zimg: vectors scale by ``W'/W``, ``H'/H``.
            True scales them by ``(W'-1)/(W-1)``, ``(H'-1)/(H-1)``.

    Shape:
        ``(B, 2, H, W)`` -> ``(B, 2, H', W')``.
    """
    _check_flow(flow)
    h, w = flow.shape[-2:]
    oh, ow = int(size[0]), int(size[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"size must be positive, got {size}")
    if (oh, ow) == (h, w):
        return flow
    ac = align_corners if interpolation in ("bilinear", "bicubic", "linear", "trilinear") else None
    out = F.interpolate(flow, size=(oh, ow), mode=interpolation, align_corners=ac)
    if align_corners:
        sx, sy = (ow - 1) / max(w - 1, 1), (oh - 1) / max(h - 1, 1)
    else:
        sx, sy = ow / w, oh / h
    scale = torch.tensor([sx, sy], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
    return out * scale


def invert_affine(m: Tensor) -> Tensor:
    """Inverse of a batch of 2x3 affine matrices.

    Shape:
        ``(B, 2, 3)`` -> ``(B, 2, 3)``.
    """
    _check_affine(m)
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    det = a * d - b * c
    inv_lin = torch.stack((torch.stack((d, -b), -1), torch.stack((-c, a), -1)), -2) / det[:, None, None]
    t = -(inv_lin @ m[:, :, 2:])
    return torch.cat((inv_lin, t), dim=-1)


def compose_affine(a: Tensor, b: Tensor) -> Tensor:
    """Affine matrix applying ``a`` first, then ``b``: ``p -> b(a(p))``.

    Shape:
        ``(B, 2, 3)``, ``(B, 2, 3)`` -> ``(B, 2, 3)`` (a batch of 1 broadcasts).
    """
    _check_affine(a, "a")
    _check_affine(b, "b")
    lin = b[:, :, :2] @ a[:, :, :2]
    t = b[:, :, :2] @ a[:, :, 2:] + b[:, :, 2:]
    return torch.cat((lin, t), dim=-1)


def similarity_matrix(angle_rad: Tensor | float, scale: Tensor | float = 1.0, tx: Tensor | float = 0.0,
                      ty: Tensor | float = 0.0, center: tuple[float, float] = (0.0, 0.0),
                      device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """2x3 similarity ``p -> s R(angle) (p - c) + c + t``.

    Args:
        angle_rad: rotation in radians; with y down, a positive angle turns x towards y
            (clockwise on screen).
        scale: isotropic scale.
        tx, ty: translation in pixels.
        center: the fixed point ``c`` of rotation and scale, ``(cx, cy)`` in pixels.
        device, dtype: of the result when no argument is a tensor.

    Returns:
        ``(B, 2, 3)``; B is the broadcast length of the tensor arguments (1 for scalars).
    """
    parts = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=dtype, device=device).reshape(-1)
                                      for v in (angle_rad, scale, tx, ty)))
    ang, s, tx_, ty_ = parts
    cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
    cx, cy = float(center[0]), float(center[1])
    row0 = torch.stack((cos, -sin, cx - cos * cx + sin * cy + tx_), -1)
    row1 = torch.stack((sin, cos, cy - sin * cx - cos * cy + ty_), -1)
    return torch.stack((row0, row1), -2)


def similarity_to_flow(M: Tensor, H: int, W: int) -> Tensor:
    """Dense flow equivalent to :func:`warp_similarity`: ``flow(q) = M^-1 q - q``.

    ``flow_warp(x, similarity_to_flow(M, H, W))`` equals ``warp_similarity(x, M)``. The flow goes
    from the output (B) frame to the source (A) frame, per the flow convention.

    Shape:
        ``(B, 2, 3)`` -> ``(B, 2, H, W)``.
    """
    _check_affine(M)
    dtype = M.dtype if M.dtype in (torch.float32, torch.float64) else torch.float32
    inv = invert_affine(M.to(dtype))
    q = _pixel_grid(H, W, M.device, dtype).flatten(2)  # (1, 2, H*W)
    src = inv[:, :, :2] @ q + inv[:, :, 2:]  # (B, 2, H*W)
    return (src - q).view(M.shape[0], 2, H, W)


def _source_map(M: Tensor) -> Tensor:
    """``M^-1`` in float64: output pixel ``q`` samples the source at ``M^-1 [q, 1]``.

    Shape:
        ``(B, 2, 3)`` -> ``(B, 2, 3)`` float64.
    """
    return invert_affine(M.detach().to(torch.float64))


class _GridTerms:
    """``grid_sample`` grid rows (align_corners=True) sampling at ``inv @ [q, 1]``, band by band.

    Each coordinate is an affine function ``a x + (b y + c)`` of the output pixel, written as the
    sum of a column term (computed once) and a row term: two passes over the grid instead of a
    matrix product.
    """

    def __init__(self, inv: Tensor, src_hw: tuple[int, int], out_hw: tuple[int, int], dtype: torch.dtype):
        (h, w), (self.oh, self.ow) = src_hw, out_hw
        dev = inv.device
        # pixel -> normalised coordinates (align_corners=True): g = s * 2 / (n - 1) - 1
        scale = torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)], dtype=torch.float64, device=dev).view(1, 2, 1)
        self.norm = inv * scale
        self.norm[:, :, 2] -= 1.0
        xs = torch.arange(self.ow, dtype=torch.float64, device=dev)
        self.cols = [(self.norm[:, k, 0, None] * xs).to(dtype)[:, None, :] for k in range(2)]  # (B, 1, W')
        self.dtype = dtype

    def __call__(self, rows: slice | None = None) -> Tensor:
        rows = rows or slice(0, self.oh)
        ys = torch.arange(rows.start, rows.stop, dtype=torch.float64, device=self.norm.device)
        grid = torch.empty(self.norm.shape[0], len(ys), self.ow, 2, dtype=self.dtype, device=self.norm.device)
        for k in range(2):
            row = (self.norm[:, k, 1, None] * ys + self.norm[:, k, 2, None]).to(self.dtype)[:, :, None]  # (B, R, 1)
            torch.add(self.cols[k], row, out=grid[..., k])
        return grid


def _affine_grid(inv: Tensor, src_hw: tuple[int, int], out_hw: tuple[int, int], dtype: torch.dtype,
                 rows: slice | None = None) -> Tensor:
    """``grid_sample`` grid ``(B, R, W', 2)`` (align_corners=True) sampling at ``inv @ [q, 1]``,
    for the output rows ``rows`` (all by default); see :class:`_GridTerms`."""
    return _GridTerms(inv, src_hw, out_hw, dtype)(rows)


def _inside_columns(inv: Tensor, src_hw: tuple[int, int], out_hw: tuple[int, int], dtype: torch.dtype,
                    tol: float = 1e-3) -> tuple[Tensor, Tensor]:
    """First and last output column of each row where ``inv @ [q, 1]`` lies inside the source.

    Inside is ``[-tol, W-1+tol] x [-tol, H-1+tol]``. Along an output row both source coordinates
    are affine in x, so the inside pixels of the row form one interval, solved here in float64.

    Shape:
        ``(B, 2, 3)`` float64 -> two ``(B, 1, H', 1)`` of ``dtype``'s sampling type (an empty row
        has first > last).
    """
    (h, w), (oh, ow) = src_hw, out_hw
    dev = inv.device
    ys = torch.arange(oh, dtype=torch.float64, device=dev)
    lo = torch.full((inv.shape[0], oh), -math.inf, dtype=torch.float64, device=dev)
    hi = torch.full_like(lo, math.inf)
    for k, size in ((0, w), (1, h)):
        a = inv[:, k, 0, None]                                 # (B, 1): slope along the row
        r = inv[:, k, 1, None] * ys + inv[:, k, 2, None]       # (B, H'): value at x = 0
        lo_v, hi_v = -tol - r, size - 1 + tol - r              # need lo_v <= a x <= hi_v
        pos, neg = a > 0, a < 0
        safe = torch.where(a == 0, torch.ones_like(a), a)
        x0, x1 = lo_v / safe, hi_v / safe
        lo = torch.maximum(lo, torch.where(pos, x0, torch.where(neg, x1, lo)))
        hi = torch.minimum(hi, torch.where(pos, x1, torch.where(neg, x0, hi)))
        flat_out = (a == 0) & ((lo_v > 0) | (hi_v < 0))        # a row entirely outside
        hi = torch.where(flat_out, torch.full_like(hi, -math.inf), hi)
    cmp = _sample_dtype(dtype)  # column indices are exact integers in float32
    first = lo.ceil().clamp(0, ow).to(cmp)[:, None, :, None]
    last = hi.floor().clamp(-1, ow - 1).to(cmp)[:, None, :, None]
    return first, last


def _inside_mask_(out: Tensor, first: Tensor, last: Tensor, x0: int = 0) -> Tensor:
    """Write ``first <= x <= last`` (per row, as 0/1) into ``out`` ``(B, 1, R, W')`` holding columns ``x0..``."""
    xs = torch.arange(x0, x0 + out.shape[-1], dtype=first.dtype, device=out.device)
    # comparisons written into float and multiplied: vectorised, unlike bool masks
    inside = torch.ge(xs, first, out=torch.empty(out.shape, dtype=first.dtype, device=out.device))
    inside.mul_(torch.le(xs, last, out=torch.empty_like(inside)))
    return out.copy_(inside)


class SimilarityBands:
    """:func:`warp_similarity` of ``x`` by ``M``, computed for one band of output rows at a time.

    For a consumer that works band by band (the merge): each call returns the warped rows and
    their validity mask, bit for bit the rows :func:`warp_similarity` gives for the whole frame
    (every output pixel is sampled independently, at the same grid coordinates), without a
    frame-sized warped copy. ``warp_similarity`` itself runs through it.

    Args:
        x: source image ``(B, C, H, W)``.
        M: ``(B, 2, 3)`` matrix mapping source points to output points.
        padding_mode, mode: as for :func:`warp_similarity`.
        dsize: output ``(H, W)``; the input size when None. At least 2 x 2, as the source.

    Shape:
        a call with rows ``r0:r1`` -> ``(B, C, r1 - r0, W')``.
    """

    def __init__(self, x: Tensor, M: Tensor, padding_mode: str = "border", mode: str = "bilinear",
                 dsize: tuple[int, int] | None = None):
        self.b, self.c, h, w = x.shape
        self.src_hw, self.out_hw = (h, w), (dsize if dsize is not None else (h, w))
        if min(*self.src_hw, *self.out_hw) < 2:
            raise ValueError(f"frames must be at least 2x2 pixels, got {h}x{w} -> {self.out_hw}")
        self.dtype, self.padding_mode, self.mode = x.dtype, padding_mode, mode
        self.sample_dtype = _sample_dtype(x.dtype)
        self.src = x.to(self.sample_dtype)
        self.inv = _source_map(M)
        self._columns: tuple[Tensor, Tensor] | None = None
        self._grid: _GridTerms | None = None

    def image(self, rows: slice) -> Tensor:
        """The warped output rows ``rows``, in the sampling dtype (float32 for float16 input)."""
        if self._grid is None:  # the column terms of the grid, the same for every band
            self._grid = _GridTerms(self.inv, self.src_hw, self.out_hw, self.sample_dtype)
        return F.grid_sample(self.src, self._grid(rows), mode=self.mode, padding_mode=self.padding_mode,
                             align_corners=True)

    def columns(self, rows: slice) -> tuple[Tensor, Tensor]:
        """First and last output column inside the source, per row of ``rows``: ``(B, 1, R, 1)`` each."""
        if self._columns is None:
            self._columns = _inside_columns(self.inv, self.src_hw, self.out_hw, self.dtype)
        first, last = self._columns
        return first[..., rows, :], last[..., rows, :]

    def inside(self, rows: slice) -> tuple[int, int]:
        """Columns ``c0:c1`` inside the source in every row of ``rows`` (``c0 >= c1`` when none):
        the mask is 1 there, so a consumer need only apply it to the columns either side."""
        first, last = self.columns(rows)
        ow = self.out_hw[1]
        c0, c1 = int(first.max()), int(last.min()) + 1
        return min(max(c0, 0), ow), min(max(c1, 0), ow)

    def mask(self, rows: slice, cols: slice = slice(None), out: Tensor | None = None) -> Tensor:
        """The validity mask (1 where ``M^-1 q`` lies inside the source) of rows ``rows``, columns ``cols``."""
        first, last = self.columns(rows)
        ow = self.out_hw[1]
        c0, c1, _ = cols.indices(ow)
        shape = (self.b, 1, first.shape[-2], c1 - c0)
        if out is None:
            out = torch.empty(shape, dtype=self.dtype, device=self.src.device)
        return _inside_mask_(out, first, last, c0)


def warp_similarity(x: Tensor, M: Tensor, padding_mode: str = "border", mode: str = "bilinear",
                    return_mask: bool = False, dsize: tuple[int, int] | None = None,
                    out: Tensor | None = None, mask_out: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """Warp ``x`` (frame A) into frame B by the 2x3 matrix ``M`` (A -> B): ``out(q) = x(M^-1 q)``.

    The semantics of ``kornia.geometry.transform.warp_affine(..., align_corners=True)``; the
    sampling grid is built from ``M^-1`` in float64 as a row term plus a column term, and the mask
    is solved per row (see :func:`_inside_columns`) instead of from a dense flow.

    Args:
        x: source image.
        M: ``(B, 2, 3)`` matrix mapping source points to output points (any affine works).
        padding_mode: ``"border"``, ``"zeros"`` or ``"reflection"``.
        mode: ``"bilinear"`` or ``"nearest"``.
        return_mask: also return a validity mask.
        dsize: output ``(H, W)``; the input size when None.
        out, mask_out: optional tensors to write the image and the mask into (not ``x``'s memory).

    Returns:
        the warped image, and with ``return_mask`` a ``(B, 1, H, W)`` mask that is 1 where
        ``M^-1 q`` lies inside the source (``[0, W-1] x [0, H-1]``, 1e-3 px of slack), else 0.

    Shape:
        x ``(B, C, H, W)``, M ``(B, 2, 3)`` -> ``(B, C, H', W')`` [, ``(B, 1, H', W')``].
    """
    _check_image(x)
    _check_affine(M)
    if M.shape[0] != x.shape[0]:
        raise ValueError(f"M has batch {M.shape[0]} but x has {x.shape[0]}")
    b, c, h, w = x.shape
    oh, ow = dsize if dsize is not None else (h, w)
    for t, shape, name in ((out, (b, c, oh, ow), "out"), (mask_out, (b, 1, oh, ow), "mask_out")):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {shape}, got {tuple(t.shape)}")
    if min(h, w, oh, ow) < 2:  # degenerate sizes: kornia's own normalisation
        dtype = _sample_dtype(x.dtype)
        warped = warp_affine(x.to(dtype), M.to(dtype), dsize=(oh, ow), mode=mode, padding_mode=padding_mode,
                             align_corners=True).to(x.dtype)
        out = warped if out is None else out.copy_(warped)
        if not return_mask:
            return out
        bands = None
    else:
        # band by band on CPU: a band's grid and samples are recycled small buffers rather than
        # frame-sized allocations the kernel page-faults in on every call
        bands = SimilarityBands(x, M, padding_mode, mode, (oh, ow))
        out = torch.empty(b, c, oh, ow, dtype=x.dtype, device=x.device) if out is None else out
        for rows in row_bands(oh, ow, x.device):
            out[..., rows, :] = bands.image(rows)
        if not return_mask:
            return out
    if mask_out is None:
        mask_out = torch.empty(b, 1, oh, ow, dtype=x.dtype, device=x.device)
    if bands is None:
        first, last = _inside_columns(_source_map(M), (h, w), (oh, ow), x.dtype)
        for rows in row_bands(oh, ow, x.device):
            _inside_mask_(mask_out[..., rows, :], first[..., rows, :], last[..., rows, :])
        return out, mask_out
    for rows in row_bands(oh, ow, x.device):
        bands.mask(rows, out=mask_out[..., rows, :])
    return out, mask_out


def forward_backward_confidence(flow_fw: Tensor, flow_bw: Tensor, alpha: float = 0.01, beta: float = 0.5,
                                soft: bool = True) -> Tensor:
    """Forward-backward consistency confidence (Sundaram et al. 2010; Meister et al. 2018, Eq. 4).

    With ``b(p) = flow_bw(p + flow_fw(p))`` (``flow_bw`` warped onto n), the check is
    ``|f + b|^2 < alpha (|f|^2 + |b|^2) + beta``. Pixels whose forward target leaves frame m
    have confidence 0.

    Args:
        flow_fw: flow from n to m.
        flow_bw: flow from m to n.
        alpha, beta: relative and absolute (pixels squared) tolerances.
        soft: ``exp(-|f + b|^2 / threshold)`` when True, the hard 0/1 test when False.

    Returns:
        confidence in [0, 1] for every pixel of n.

    Shape:
        ``(B, 2, H, W)``, ``(B, 2, H, W)`` -> ``(B, 1, H, W)``.
    """
    _check_flow(flow_fw, "flow_fw")
    _check_flow(flow_bw, "flow_bw")
    if flow_fw.shape != flow_bw.shape:
        raise ValueError(f"flow_fw {tuple(flow_fw.shape)} and flow_bw {tuple(flow_bw.shape)} differ")
    if alpha < 0 or beta <= 0:
        raise ValueError(f"need alpha >= 0 and beta > 0, got {alpha}, {beta}")
    h, w = flow_fw.shape[-2:]
    bw = flow_warp(flow_bw, flow_fw, padding_mode="border")
    diff = (flow_fw + bw).pow(2).sum(1, keepdim=True)
    thr = alpha * (flow_fw.pow(2).sum(1, keepdim=True) + bw.pow(2).sum(1, keepdim=True)) + beta
    conf = torch.exp(-diff / thr) if soft else (diff < thr).to(flow_fw.dtype)
    pos = _pixel_grid(h, w, flow_fw.device, flow_fw.dtype) + flow_fw
    inside = (pos[:, :1] >= 0) & (pos[:, :1] <= w - 1) & (pos[:, 1:] >= 0) & (pos[:, 1:] <= h - 1)
    return conf * inside.to(conf.dtype)


def through_similarity(res: Tensor, m: Tensor) -> Tensor:
    """Flow to the original frame from a residual flow to that frame warped by similarity ``m``.

    ``res`` goes from frame n to the neighbour after ``warp_similarity(neighbour, m)``; the result
    backward-warps the unwarped neighbour onto n: ``total(p) = res(p) + S(p + res(p))`` with
    ``S = similarity_to_flow(m)``.

    Shape:
        ``res (B, 2, H, W)``, ``m (B, 2, 3)`` -> ``(B, 2, H, W)`` float32.
    """
    res = res.float()
    return res + flow_warp(similarity_to_flow(m.to(res.device), *res.shape[-2:]), res)


_EYE = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def align_to_ref(x: Tensor, to_ref: Tensor, ref: int) -> Tensor:
    """Warp every slot of a window but ``ref`` onto the reference by its similarity (Chen et al. 3.1).

    Slots whose transform is the identity (no alignment props) are passed through untouched.

    Shape:
        ``x (T, C, H, W)``, ``to_ref (T, 2, 3)`` -> ``(T, C, H, W)``.
    """
    moved = [i for i in range(x.shape[0]) if i != ref and not torch.equal(to_ref[i].cpu(), _EYE)]
    if not moved:
        return x
    warped = warp_similarity(x[moved], to_ref[moved].to(x.device))  # (len(moved), C, H, W)
    slots = list(x.unbind(0))
    for j, i in enumerate(moved):
        slots[i] = warped[j]
    return torch.stack(slots)
