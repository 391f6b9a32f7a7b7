"""One timed run of the weight-free chain, in a fresh process, with ``vs_hdrvid`` from a given tree.

``vs-hdrvid bench --compare REV`` runs this file as a script, alternately with the package as it is
and with a copy of revision ``REV``, so that both are timed the same way on the same machine within
one bench run. It uses only what every revision has: the nodes' public signatures and
``vs_hdrvid.malloc.tune_malloc``; the synthetic source is defined here, not taken from the tree.

Usage: ``python _chain_worker.py ROOT WIDTH HEIGHT EV[,EV...] FRAMES`` prints one JSON line
``{"fps": ..., "cpu_ms_per_frame": ..., "cores_used": ...}`` (CPU time of all threads over wall time: below
the machine's cores when other jobs share them).
"""
from __future__ import annotations

import json
import resource
import sys
import time


def source(width: int, height: int, evs: list[float], frames: int, seed: int = 0):
    """An RGB48 alternating-exposure clip of a textured scene panning 3 px per frame (as ``bench``'s)."""
    import cv2
    import numpy as np
    import vapoursynth as vs

    rng = np.random.default_rng(seed)
    small = rng.standard_normal((height // 16 + 4, width // 16 + 4)).astype(np.float32)
    field = cv2.resize(small, (width + 3 * frames + 64, height + 64), interpolation=cv2.INTER_CUBIC)
    hdr = np.exp2(2.5 * field)[..., None] * np.array([1.0, 0.85, 0.7], np.float32)
    imgs = []
    for n in range(len(evs) * 2):
        h = hdr[32:32 + height, 32 + 3 * n:32 + 3 * n + width]
        ldr = np.clip(h * 2.0 ** evs[n % len(evs)], 0, 1) ** (1 / 2.2)
        imgs.append(np.round(ldr * 65535).astype(np.uint16))
    blank = vs.core.std.BlankClip(format=vs.RGB48, width=width, height=height, length=frames)

    def fill(n: int, f):
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), imgs[n % len(imgs)][..., p])
        return out

    return vs.core.std.ModifyFrame(blank, blank, fill)


def main(argv: list[str]) -> None:
    root, width, height, evs, frames = argv[0], int(argv[1]), int(argv[2]), argv[3], int(argv[4])
    sys.path.insert(0, root)
    import vs_hdrvid  # noqa: F401  (from ROOT: the path is first)
    from vs_hdrvid import nodes
    from vs_hdrvid.malloc import tune_malloc

    tune_malloc()
    pattern = [float(v) for v in evs.split(",")]

    def chain(length: int):
        clip = nodes.linearize(source(width, height, pattern, length), exposures=pattern, device="cpu")
        return nodes.tonemap(nodes.merge(nodes.align(clip, device="cpu"), device="cpu"), "pq", device="cpu")

    for _ in range(3):  # the steady state of a long run: the pools and caches it fills once
        for _ in chain(frames).frames(close=True):
            pass
    clip = chain(frames)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for _ in clip.frames(close=True):
        pass
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"fps": frames / wall, "cpu_ms_per_frame": cpu / frames * 1e3, "cores_used": cpu / wall,
                      "root": str(vs_hdrvid.__file__)}))


if __name__ == "__main__":
    main(sys.argv[1:])
