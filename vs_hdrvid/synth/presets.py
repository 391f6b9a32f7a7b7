"""Dataset presets with fixed seeds and source splits that never share a panorama or texture.

Splits of the eight ``blender-data`` panoramas (backgrounds *and* texture crops stay in their split):

=========  ==============================================  =====================
split      panoramas                                       procedural seeds
=========  ==============================================  =====================
train      city, courtyard, interior, studio, sunrise      [0, 1e6)
val        sunset                                          [1e6, 2e6)
test       forest, night                                   [2e6, 3e6)
shifted    forest, night (the test panoramas)              [3e6, 4e6)
micro      procedural panoramas ``proc:101``/``proc:102``  [9e6, 1e7)
sample     sunset (an example clip, 224x128, 12 frames)     [8e6, 9e6)
train3d    the train panoramas (3D rooms)                   [0, 1e6) (train's)
test3d     forest, night (3D rooms)                         [4e6, 5e6)
=========  ==============================================  =====================

Recipes: Chen et al. 2021 (``clean``: EV {-1, +1}, {-1.5, +1.5} and {-2, 0, +2}, Gaussian noise on
the low exposures, 8-bit) and DeAltHDR (``day``/``night``: EV {-2, +1}, long frames integrated from
sub-frames, Eq. A/B noise, 10-bit). The test preset crosses the five recipes with three motion
levels (15 scenes, 480x270, 10 frames, 12 for three exposures); ``subframes`` is 32 for test/val
and 16 for train (DeAltHDR uses 64; the blur length is the same, only its sampling differs).
Train: 200 scenes of 256x256, 8 frames (9 for three exposures), noise sigma ~ U(1e-4, 1e-3), about
10 MB per scene with flow (``--scenes N`` changes the count); val: 6 scenes like test.

``shifted`` is a domain shift for measuring self-supervised adaptation (DeAltHDR section 3.4):
unlabeled LDR frames a DeAltHDR network trained on ``day``/``night`` has never seen, with ground
truth kept for PSNR-mu before and after adapting. Same pattern (EV {-2, +1}, short first), same
container (10-bit linear in 16-bit PNGs) and scene statistics as training, but (1) the Bayer sensor
model of :mod:`vs_hdrvid.synth.sensor` (Poisson-Gaussian with PRNU, row banding, column fixed
pattern, white-balance gains, colour matrix, bilinear demosaicing) instead of Eq. A/B noise, and
(2) long frames integrated from 64 sub-frames along a handheld-shake trajectory
(:mod:`vs_hdrvid.synth.shake`: jittery, curved camera paths inside each exposure; short frames
stay sharp) instead of the smooth path. 8 scenes of 256x256, 24 frames (adaptation samples
neighbours up to t +- 6): ``sensor_day`` with the training brightness and ``sensor_night`` darker
(key 0.03-0.1), each on both panoramas (the panorama list repeats so the two cross), motions
small, medium, large, medium; about 33 MB per scene with flow, 2.5 minutes on one core. Generated
on demand (``vs-hdrvid synth --preset shifted``), not by ``make data``.

``train3d``/``test3d`` are made of 3D rooms (``geometry="room"``, :mod:`vs_hdrvid.synth.room`): a
camera that rotates and translates inside a textured box with one or two nearer panels, so the
background has parallax and depth occlusions the panorama presets lack; one or two layers and a
lamp on top. ``train3d``: 60 scenes like ``train`` (256x256, 8/9 frames, the train split's
panoramas and texture seeds, another seed); ``test3d``: 15 scenes like ``test`` (480x270, 10/12
frames, the test panoramas, texture seeds of their own), every recipe at every motion level. Held
out: generated on demand (``vs-hdrvid synth --preset test3d``), not by ``make data``.

When ``--panoramas DIR`` holds none of a preset's named panoramas, every EXR/HDR image and EXR
sequence folder in ``DIR`` becomes the preset's sources instead (the split is then the user's).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vs_hdrvid.synth.sources import find_sources
from vs_hdrvid.synth.spec import SceneSpec, strict_from_dict

__all__ = ["Recipe", "Preset", "PRESETS", "get_preset", "SPLIT_PANORAMAS"]

SPLIT_PANORAMAS = {
    "train": ("city", "courtyard", "interior", "studio", "sunrise"),
    "val": ("sunset",),
    "test": ("forest", "night"),
}


@dataclass(frozen=True)
class Recipe:
    """Exposure pattern and degradation of a scene (Chen et al. ``clean``, DeAltHDR ``day``/``night``,
    or the ``sensor_day``/``sensor_night`` model of the ``shifted`` preset)."""

    exposures: tuple[float, ...]
    degradation: str = "clean"
    subframes: int = 1
    extra: tuple[tuple[str, object], ...] = ()   # further SceneSpec fields (over the preset's extra)

    @property
    def tag(self) -> str:
        return f"ev{''.join(f'{e:+g}' for e in self.exposures)}_{self.degradation}"


def _chen_and_dealthdr(subframes: int) -> tuple[Recipe, ...]:
    return (Recipe((-1.5, 1.5)), Recipe((-1.0, 1.0)), Recipe((-2.0, 0.0, 2.0)),
            Recipe((-2.0, 1.0), "day", subframes), Recipe((-2.0, 1.0), "night", subframes))


@dataclass(frozen=True)
class Preset:
    """A reproducible set of scenes: scene ``i`` uses recipe ``i % R``, motion ``(i // R) % M``,
    panorama ``i % P`` and seed ``seed * 100003 + i``.

    Args:
        panoramas: background sources; scene ``i`` uses ``panoramas[i % P]`` (a name may repeat to
            cross panoramas with recipes), layer textures come from the distinct names.
        frames_3exp: length of three-exposure scenes (a multiple of 3 keeps whole periods).
        flat: write the single scene directly into ``<root>/<name>/`` (no index).
        extra: further :class:`SceneSpec` fields applied to every scene.
    """

    name: str
    seed: int
    width: int
    height: int
    frames: int
    scenes: int
    panoramas: tuple[str, ...]
    texture_seeds: tuple[int, int]
    recipes: tuple[Recipe, ...]
    motions: tuple[str, ...] = ("small", "medium", "large")
    frames_3exp: int | None = None
    noise_sigma: float | tuple[float, float] = 1e-3
    flat: bool = False
    write_flow: bool = True
    extra: tuple[tuple[str, object], ...] = ()

    def sources(self, panoramas: str | Path | None) -> tuple[str, ...]:
        """The background/texture sources: the named panoramas, or everything in a user folder."""
        if panoramas is None or all(p.startswith("proc:") for p in self.panoramas):
            return self.panoramas
        folder = Path(panoramas)
        found = find_sources(folder) if folder.is_dir() else {}
        missing = [p for p in self.panoramas if p not in found]
        if not missing:
            return self.panoramas
        if found and len(missing) == len(self.panoramas):          # a user's own sources
            return tuple(str(s.paths[0].parent if s.kind == "sequence" else s.paths[0]) for s in found.values())
        raise FileNotFoundError(f"synth: panoramas {missing} not in {folder}; run "
                                "`vs-hdrvid synth --fetch-panoramas` first")

    def plan(self, scenes: int | None = None, panoramas: str | Path | None = None) -> list[SceneSpec]:
        """The scene specs, in order (``scenes`` overrides the count)."""
        srcs = self.sources(panoramas)
        textures = tuple(dict.fromkeys(srcs))
        n = self.scenes if scenes is None else int(scenes)
        out = []
        for i in range(n):
            r = self.recipes[i % len(self.recipes)]
            motion = self.motions[(i // len(self.recipes)) % len(self.motions)]
            src = srcs[i % len(srcs)]
            frames = self.frames_3exp if (len(r.exposures) == 3 and self.frames_3exp) else self.frames
            sid = self.name if self.flat else f"{i:04d}_{Path(src).stem.replace(':', '')}_{r.tag}_{motion}"
            out.append(SceneSpec(scene_id=sid, seed=self.seed * 100003 + i, source=src, width=self.width,
                                 height=self.height, frames=frames, exposures=r.exposures,
                                 degradation=r.degradation, motion=motion, subframes=r.subframes,
                                 texture_sources=textures, texture_seeds=self.texture_seeds,
                                 noise_sigma=self.noise_sigma, write_flow=self.write_flow,
                                 **{**dict(self.extra), **dict(r.extra)}))
        return out

    def replace(self, **changes) -> "Preset":
        """A copy with some fields changed (unknown fields raise ``TypeError``)."""
        return strict_from_dict(Preset, {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                                         **changes})


#: SceneSpec fields of the 3D presets: room geometry, one or two layers on top.
_ROOM = (("geometry", "room"), ("layers", (1, 2)))

PRESETS: dict[str, Preset] = {
    "train": Preset("train", 1, 256, 256, 8, 200, SPLIT_PANORAMAS["train"], (0, 1_000_000),
                    _chen_and_dealthdr(16), frames_3exp=9, noise_sigma=(1e-4, 1e-3)),
    "val": Preset("val", 2, 480, 270, 10, 6, SPLIT_PANORAMAS["val"], (1_000_000, 2_000_000),
                  _chen_and_dealthdr(32), frames_3exp=12),
    "test": Preset("test", 3, 480, 270, 10, 15, SPLIT_PANORAMAS["test"], (2_000_000, 3_000_000),
                   _chen_and_dealthdr(32), frames_3exp=12),
    "shifted": Preset("shifted", 6, 256, 256, 24, 8, ("forest", "night", "night", "forest"), (3_000_000, 4_000_000),
                      (Recipe((-2.0, 1.0), "sensor_day", 64, (("trajectory", "handheld"),)),
                       Recipe((-2.0, 1.0), "sensor_night", 64, (("trajectory", "handheld"), ("key", (0.03, 0.1))))),
                      motions=("small", "medium", "large", "medium")),
    "micro": Preset("micro", 4, 64, 48, 6, 2, ("proc:101", "proc:102"), (9_000_000, 10_000_000),
                    (Recipe((-1.5, 1.5)), Recipe((-2.0, 1.0), "day", 8)), motions=("large",)),
    "sample": Preset("sample", 5, 224, 128, 12, 1, ("sunset",), (8_000_000, 9_000_000),
                     (Recipe((-1.5, 1.5)),), motions=("medium",), flat=True, write_flow=False,
                     extra=(("layers", (1, 2)), ("emissive", 1))),
    "train3d": Preset("train3d", 7, 256, 256, 8, 60, SPLIT_PANORAMAS["train"], (0, 1_000_000),
                      _chen_and_dealthdr(16), frames_3exp=9, noise_sigma=(1e-4, 1e-3), extra=_ROOM),
    "test3d": Preset("test3d", 8, 480, 270, 10, 15, SPLIT_PANORAMAS["test"], (4_000_000, 5_000_000),
                     _chen_and_dealthdr(32), frames_3exp=12, extra=_ROOM),
}


def get_preset(name: str) -> Preset:
    """Look up a preset by name.

    Raises:
        KeyError: unknown name (the message lists the presets).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"synth: unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
