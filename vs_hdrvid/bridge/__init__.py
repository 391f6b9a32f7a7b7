"""Between VapourSynth and torch: what every node goes through.

- :mod:`.transfer`: frames to tensors and back (host pool, pinned staging, transfer counters);
- :mod:`.handoff`: the cache that hands a node's output tensor to the next vs_hdrvid node;
- :mod:`.windows`: exposure-aware temporal windows as shifted clips;
- :mod:`.requests`: which frames each clip reads of the clips it is built from, as built;
- :mod:`.runner`: :class:`NodeRunner`, a node's per-frame execution (slots, streams, uploads,
  scratch) and the one default of ``num_streams``;
- :mod:`.timing`: where each node's frame time goes, for benchmarks (off by default).
"""
from .handoff import TOKEN_PROP, HandoffCache, handoff
from .runner import NodeRunner, blank_like, default_streams
from .timing import StageTimes, stage_times
from .transfer import Counters, HostPool, counters, frame_to_tensor, host_pool, new_frame, tensor_to_frame
from .windows import clamped_shift, shift_clip, window_index

__all__ = ["TOKEN_PROP", "HandoffCache", "handoff", "NodeRunner", "blank_like",
           "default_streams", "Counters", "HostPool", "counters", "frame_to_tensor", "host_pool", "new_frame",
           "tensor_to_frame", "clamped_shift", "shift_clip", "window_index", "StageTimes", "stage_times"]
