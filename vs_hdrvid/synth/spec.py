"""Scene specifications: everything that determines one synthetic sequence, JSON round-trippable.

A :class:`SceneSpec` plus the source images determines a scene bit for bit: all random choices
(camera path, layers, textures, noise parameters, noise samples) are drawn from
``numpy.random.SeedSequence(seed)``.

Timing (DeAltHDR section 4.1): frame ``i`` shows the scene at ``t = i`` (frame intervals). With
``subframes = S > 1`` the pattern must be two exposures, short first; each pair of frames is one
chunk of ``S`` sub-frames spanning two frame intervals: the short frame is sub-frame 0 (``t = 2k``),
the long frame the mean of sub-frames ``1 .. S - 1`` (``t = 2k + 2j / S``), centred on ``2k + 1``,
its ground truth being the middle sub-frame. DeAltHDR uses ``S = 64`` (1 short + 63 long).

Degradations: ``clean`` (Chen et al.), ``day``/``night`` (DeAltHDR Eq. A/B) and the
``sensor_day``/``sensor_night`` Bayer-sensor model of :mod:`vs_hdrvid.synth.sensor` (the ``shifted``
preset). Trajectories: ``smooth`` (every training recipe) or ``handheld`` (:mod:`vs_hdrvid.synth.shake`).
Geometries: ``panorama`` (a rotating camera in a panorama or before a plate,
:mod:`vs_hdrvid.synth.camera`) or ``room`` (a rotating and translating camera in a textured 3D box
with panels, :mod:`vs_hdrvid.synth.room`: parallax, occlusion by depth).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["SceneSpec", "MOTION", "DEGRADATIONS", "TRAJECTORIES", "GEOMETRIES", "strict_from_dict", "frame_times"]

#: Camera degradations a scene can have (see the module docstring).
DEGRADATIONS = ("clean", "day", "night", "sensor_day", "sensor_night")
#: Camera trajectories: the smooth path of the training recipes, or that path plus handheld shake.
TRAJECTORIES = ("smooth", "handheld")
#: Background geometries: the 2D panorama/plate of every preset before ``*3d``, or a 3D room.
GEOMETRIES = ("panorama", "room")

#: Per-level motion magnitudes. ``cam``/``layer``: displacement per frame as a fraction of the
#: width; ``roll``: rad/frame; ``zoom``/``layer_zoom``: log-scale per frame; ``shake``: fraction
#: of the width (amplitude); ``warp``: temporal frequency of non-rigid motion, rad/frame;
#: ``handheld``: RMS of the handheld jitter (``trajectory="handheld"``), fraction of the width.
MOTION = {
    "small": {"cam": 0.004, "layer": 0.006, "roll": 0.002, "zoom": 0.003, "shake": 0.0015,
              "layer_rot": 0.01, "layer_zoom": 0.005, "warp": 0.1, "handheld": 0.004},
    "medium": {"cam": 0.012, "layer": 0.02, "roll": 0.005, "zoom": 0.008, "shake": 0.003,
               "layer_rot": 0.03, "layer_zoom": 0.012, "warp": 0.25, "handheld": 0.008},
    "large": {"cam": 0.03, "layer": 0.05, "roll": 0.01, "zoom": 0.015, "shake": 0.006,
              "layer_rot": 0.06, "layer_zoom": 0.025, "warp": 0.5, "handheld": 0.016},
}


def strict_from_dict(cls, data: dict):
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys; lists become tuples.

    Raises:
        TypeError: a key that ``cls`` does not have (a typo must never turn into a default).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise TypeError(f"{cls.__name__}: unknown keys {unknown}; valid keys are {sorted(names)}")
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})


@dataclass(frozen=True)
class SceneSpec:
    """One sequence to synthesise.

    Args:
        scene_id: folder name of the scene.
        seed: root seed of every random choice.
        source: background source (panorama name, ``"proc:<seed>"``, or a path).
        width, height, frames: output size and length.
        exposures: EV pattern (stops), repeated from frame 0.
        degradation: ``"clean"`` (Chen et al.), ``"day"`` or ``"night"`` (DeAltHDR), or
            ``"sensor_day"`` / ``"sensor_night"`` (Bayer sensor model, :mod:`vs_hdrvid.synth.sensor`).
        motion: ``"small"``, ``"medium"`` or ``"large"`` (see :data:`MOTION`).
        subframes: sub-frames per two-frame chunk (1 = instantaneous frames).
        texture_sources: panoramas whose crops may texture the layers (same split only).
        texture_seeds: half-open range of procedural texture seeds (disjoint between splits).
        layers: inclusive range of ordinary layer counts.
        emissive: number of emissive (light source) layers.
        noise_sigma: Gaussian sigma of ``clean`` (a pair draws it from ``U(lo, hi)``).
        key: range of the geometric-mean background radiance at ``t = 0`` (log-uniform).
        hfov: range of the initial horizontal field of view, degrees.
        write_flow: write ``flow/`` (ground-truth flow and occlusion).
        trajectory: ``"smooth"`` or ``"handheld"`` (the smooth path plus in-exposure shake).
        geometry: ``"panorama"`` (the source is the background) or ``"room"`` (a 3D room whose
            surfaces are textured like the layers; see :mod:`vs_hdrvid.synth.room`).
    """

    scene_id: str
    seed: int
    source: str
    width: int
    height: int
    frames: int
    exposures: tuple[float, ...]
    degradation: str = "clean"
    motion: str = "medium"
    subframes: int = 1
    texture_sources: tuple[str, ...] = ()
    texture_seeds: tuple[int, int] = (0, 1_000_000)
    layers: tuple[int, int] = (2, 3)
    emissive: int = 1
    noise_sigma: float | tuple[float, float] = 1e-3
    key: tuple[float, float] = (0.08, 0.3)
    hfov: tuple[float, float] = (45.0, 65.0)
    write_flow: bool = True
    trajectory: str = "smooth"
    geometry: str = "panorama"

    def __post_init__(self):
        if self.degradation not in DEGRADATIONS:
            raise ValueError(f"SceneSpec: degradation must be one of {list(DEGRADATIONS)}, got {self.degradation!r}")
        if self.trajectory not in TRAJECTORIES:
            raise ValueError(f"SceneSpec: trajectory must be one of {list(TRAJECTORIES)}, got {self.trajectory!r}")
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"SceneSpec: geometry must be one of {list(GEOMETRIES)}, got {self.geometry!r}")
        if self.motion not in MOTION:
            raise ValueError(f"SceneSpec: motion must be one of {list(MOTION)}, got {self.motion!r}")
        if not 1 <= len(self.exposures) <= 3:
            raise ValueError(f"SceneSpec: 1 to 3 exposures, got {self.exposures}")
        if self.subframes < 1:
            raise ValueError(f"SceneSpec: subframes must be >= 1, got {self.subframes}")
        if self.subframes > 1 and (len(self.exposures) != 2 or self.exposures[0] >= self.exposures[1]):
            raise ValueError("SceneSpec: subframes > 1 needs a two-exposure pattern, short first "
                             f"(DeAltHDR), got {self.exposures}")
        if self.width < 16 or self.height < 16 or self.frames < 2:
            raise ValueError(f"SceneSpec: too small ({self.width}x{self.height}, {self.frames} frames)")

    @property
    def bit_depth(self) -> int:
        """PNG bit depth: 8 for Chen-style clean frames, 16 for 10-bit DeAltHDR frames."""
        return 8 if self.degradation == "clean" else 16

    def to_dict(self) -> dict:
        """JSON-friendly fields; ``trajectory`` only when not ``"smooth"`` and ``geometry`` only when not
        ``"panorama"``, so specs recorded before the fields existed still compare equal (their scenes
        are not regenerated)."""
        out = {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
               for f in dataclasses.fields(self)}
        if out["trajectory"] == "smooth":
            del out["trajectory"]
        if out["geometry"] == "panorama":
            del out["geometry"]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SceneSpec":
        return strict_from_dict(cls, data)


def frame_times(spec: SceneSpec, i: int) -> list[float]:
    """Scene times integrated by frame ``i`` (one time for instantaneous or short frames)."""
    s = spec.subframes
    if s == 1 or i % 2 == 0:
        return [float(i)]
    k = i // 2
    return [2.0 * k + 2.0 * j / s for j in range(1, s)]
