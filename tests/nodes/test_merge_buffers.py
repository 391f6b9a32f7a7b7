"""merge node: neighbours are aligned in place in the window's stack and the validity masks live
in reused buffers; frames that share sources must not see each other's work."""
import numpy as np
import pytest

import vs_hdrvid as hv

from conftest import make_sequence, planes


@pytest.mark.parametrize("evs", [[-1.5, 1.5], [-2.0, 0.0, 2.0]])
def test_frames_in_order_equal_frames_alone(tmp_path, evs):
    """Pulled in order, each window reuses the uploads of the last; pulled alone from a fresh
    graph, nothing is reused. Both must give the same pixels."""
    seq = make_sequence(tmp_path, evs, 7, motion=(1.5, -0.5, 0.3, 1.002))

    def merged():
        lin = hv.linearize(hv.read_images(seq.pattern), exposures=evs, device="cpu")
        return hv.merge(hv.align(lin, device="cpu"), device="cpu")

    in_order = [planes(f) for f in merged().frames(close=True)]
    for n in (0, 3, 6):
        np.testing.assert_array_equal(planes(merged().get_frame(n)), in_order[n])
    assert not np.array_equal(in_order[2], in_order[3])
