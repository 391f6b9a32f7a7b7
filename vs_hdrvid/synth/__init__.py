"""Synthetic alternating-exposure video with ground-truth HDR, flow and occlusion.

Recipes of Chen et al. 2021 (section 5.1) and DeAltHDR (section 4.1, Appendix A), and a shifted
domain (Bayer sensor noise, handheld shake) for measuring self-supervised adaptation. Importing this
package is cheap; the heavy modules load on first use.
"""
from __future__ import annotations

from importlib import import_module

__all__ = ["fetch_panoramas", "generate", "generate_scene", "add_cli", "run_cli", "get_preset", "PRESETS",
           "SceneSpec", "Scene", "build_scene", "perturb_tone", "add_linear_noise", "Augment",
           "sample_augment", "ldr_to_radiance", "camera_pipeline", "NoiseModel", "sample_dealthdr_noise",
           "SensorModel", "sample_sensor", "handheld_knots", "GENERATOR_VERSION"]

_WHERE = {
    "fetch_panoramas": "sources", "generate": "dataset", "generate_scene": "dataset",
    "GENERATOR_VERSION": "dataset", "add_cli": "cli", "run_cli": "cli", "get_preset": "presets",
    "PRESETS": "presets", "SceneSpec": "spec", "Scene": "scene", "build_scene": "sampling",
    "perturb_tone": "augment", "add_linear_noise": "augment", "Augment": "augment",
    "sample_augment": "augment", "ldr_to_radiance": "augment", "camera_pipeline": "degrade",
    "NoiseModel": "degrade", "sample_dealthdr_noise": "degrade", "SensorModel": "sensor",
    "sample_sensor": "sensor", "handheld_knots": "shake",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"vs_hdrvid.synth.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'vs_hdrvid.synth' has no attribute {name!r}")
