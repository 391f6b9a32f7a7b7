"""Flow clips given to a node (``merge(flow=...)``, ``coarse(flow=...)``): one check for all."""
from __future__ import annotations

from typing import Sequence

import vapoursynth as vs

from ._common import check_clip, error

__all__ = ["check_flow_clips"]


def check_flow_clips(flow: vs.VideoNode | Sequence[vs.VideoNode] | None, clip: vs.VideoNode,
                     offsets: Sequence[int], node: str) -> list[vs.VideoNode]:
    """The flow clips for ``offsets`` (one each, in order), checked at graph build time.

    Each must be RGBS (u, v, confidence) of the clip's size and length, as ``hv.classical_flow``
    and ``hv.flow`` make them. ``None`` gives an empty list.
    """
    if flow is None:
        return []
    flows = [flow] if isinstance(flow, vs.VideoNode) else list(flow)
    if len(flows) != len(offsets):
        raise error(node, f"flow needs one clip per neighbour offset {list(offsets)}, got {len(flows)}; "
                          f"e.g. [hv.classical_flow(clip, o) for o in {tuple(offsets)}]")
    checked = []
    for f in flows:
        f = check_clip(f, node)
        if f.format.id != vs.RGBS or (f.width, f.height) != (clip.width, clip.height):
            raise error(node, "flow clips must be RGBS (u, v, confidence) of the clip's size and length; "
                              "make them with hv.classical_flow or hv.flow")
        if f.num_frames != clip.num_frames:
            raise error(node, f"a flow clip has {f.num_frames} frames, the clip {clip.num_frames}")
        checked.append(f)
    return checked
