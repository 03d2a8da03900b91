"""Procedural CLEVR-style scenes: the offline default data of slotlab.

Scenes are sampled the way the CLEVR generator samples them (3-10 objects; cube / sphere /
cylinder, small / large, rubber / metal, the 8 CLEVR colours; x, y uniform in [-3, 3]; minimum
distances and margins between objects; a camera like CLEVR's Blender camera) and rendered by a
vectorised numpy ray caster (occlusion, an area key light with soft shadows, fill and back
lights, contact darkening, metal reflections and highlights). Every scene is a dict with the
fields of a CLEVR scene JSON, so the code that reads real CLEVR (set-prediction targets, the
CLEVR6 filter, the official crop) runs unchanged on it; unlike CLEVR it also comes with instance
masks (0 = background, i + 1 = object i).

    scene = procedural_scene(seed=0, split="train", index=7)      # deterministic
    image, mask = render_scene(scene, 480, 320)                    # uint8 [320, 480, 3], [320, 480]
    ds = ProceduralClevrDataset("train", "object_discovery", num=10000)
    generate_clevr_dir("out/CLEVR_procedural", "train", num=1000, seed=0)   # CLEVR v1.0 layout

Modules: `scenes` (sampling), `camera` (CLEVR's camera and projection), `render` (the ray
caster), `dataset` (`ProceduralClevrDataset`) and `writer` (`generate_clevr_dir`).

Geometry follows the CLEVR conventions: objects rest on the ground plane z = 0, `3d_coords[2]`
is the half extent (0.35 small, 0.7 large; cubes are shrunk by sqrt(2) as in CLEVR, so their
half extent is 0.247 / 0.495), `rotation` is in degrees about the vertical axis, and
`pixel_coords` is [u, v, depth] of the object centre in the image the scene is rendered to.
Image sizes passed to the renderer (`render_scene(scene, width, height)`, `image_size`, the
native frame `NATIVE_SIZE`) are (width, height) like Pillow's; dataset and generator options
named `resolution` are (height, width) like every `resolution` in slotlab.data.
"""


from slotlab.data.clevr_vocab import CLEVR_RGB, NATIVE_SIZE
from slotlab.data.procedural.camera import camera_location, project
from slotlab.data.procedural.dataset import ProceduralClevrDataset
from slotlab.data.procedural.render import render_scene
from slotlab.data.procedural.scenes import (
    MIN_PIXELS,
    procedural_scene,
    sample_scene,
    scene_to_json,
    split_seed,
    visible_pixels,
)
from slotlab.data.procedural.writer import generate_clevr_dir, prepare_output_dir

__all__ = [
    "CLEVR_RGB",
    "MIN_PIXELS",
    "NATIVE_SIZE",
    "ProceduralClevrDataset",
    "camera_location",
    "generate_clevr_dir",
    "prepare_output_dir",
    "procedural_scene",
    "project",
    "render_scene",
    "sample_scene",
    "scene_to_json",
    "split_seed",
    "visible_pixels",
]
