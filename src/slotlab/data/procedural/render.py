"""The ray caster of the procedural scenes: a vectorised numpy renderer of CLEVR scene dicts.

Occlusion, an area key light with soft shadows, fill and back lights, contact darkening, metal
reflections and highlights; supersampling only where it matters (silhouettes and creases).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from slotlab.data.clevr_vocab import CLEVR_RGB, FOCAL_OVER_SENSOR, NATIVE_SIZE, SHAPES
from slotlab.data.procedural.camera import camera_basis, camera_location, normalize, project
from slotlab.errors import ConfigError

__all__ = ["KEY_LIGHT", "render_ids", "render_scene"]

_EPS = 1e-3
# Lighting (linear units): an area key light up and to the left of the camera, a fill light
# from the camera's right, a rim light from behind, ambient; a grey floor.
KEY_LIGHT = (-0.9, -5.4, 9.0)
_KEY_RADIUS = 1.5
_KEY_POWER = 0.95
_FILL_POWER = 0.3
_BACK_POWER = 0.2
_AMBIENT = 0.22
_FILL_DIR = (np.array([0.62, -0.3, 0.55]) / np.linalg.norm([0.62, -0.3, 0.55])).astype(np.float32)
_BACK_DIR = (np.array([-0.7, 0.6, 0.6]) / np.linalg.norm([-0.7, 0.6, 0.6])).astype(np.float32)
_GROUND_RGB = (0.2, 0.2, 0.2)  # linear albedo of the floor (a mid grey once displayed)
_SHADOW_STEPS = 12


class _Shape:
    """One object in renderer form (world-space centre, half extent, rotation, material)."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self.kind = obj["shape"]
        if self.kind not in SHAPES:
            raise ConfigError(f"unknown shape {self.kind!r}; expected one of {', '.join(SHAPES)}")
        self.centre = np.asarray(obj["3d_coords"], dtype=np.float32)
        self.half = float(self.centre[2])  # objects rest on the ground: z = half extent
        theta = math.radians(float(obj.get("rotation", 0.0)))
        self.cos, self.sin = math.cos(theta), math.sin(theta)
        rgb = np.asarray(CLEVR_RGB[obj["color"]], dtype=np.float32) / 255.0
        self.albedo = _srgb_to_linear(rgb)
        self.metal = obj.get("material") == "metal"
        # Horizontal bounding radius and bounding-sphere radius.
        h = self.half
        self.radius_xy = h * math.sqrt(2.0) if self.kind == "cube" else h
        self.radius = {"sphere": h, "cube": h * math.sqrt(3.0), "cylinder": h * math.sqrt(2.0)}[
            self.kind
        ]

    def corners(self) -> np.ndarray:
        """The 8 corners [8, 3] of an axis-aligned box around the object."""
        x, y, _ = self.centre
        r, top = self.radius_xy, 2.0 * self.half
        return np.array(
            [[x + sx * r, y + sy * r, z] for sx in (-1, 1) for sy in (-1, 1) for z in (0.0, top)]
        )

    def intersect(
        self, origin: np.ndarray, direction: np.ndarray, want_normal: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Nearest hit distance [N] (inf = miss) of rays origin + t * direction, t > eps."""
        if self.kind == "sphere":
            return _hit_sphere(origin, direction, self.centre, self.half, want_normal)
        if self.kind == "cube":
            return _hit_box(origin, direction, self, want_normal)
        return _hit_cylinder(origin, direction, self.centre, self.half, want_normal)

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """Signed distance [M] from world points [M, 3] to the object surface."""
        rel = points - self.centre
        if self.kind == "sphere":
            return _norm(rel) - self.half
        if self.kind == "cube":
            x = self.cos * rel[:, 0] + self.sin * rel[:, 1]
            y = -self.sin * rel[:, 0] + self.cos * rel[:, 1]
            qs = [np.abs(x) - self.half, np.abs(y) - self.half, np.abs(rel[:, 2]) - self.half]
        else:
            qs = [np.hypot(rel[:, 0], rel[:, 1]) - self.half, np.abs(rel[:, 2]) - self.half]
        outside = np.sqrt(sum(np.maximum(q, 0.0) ** 2 for q in qs))
        inside = qs[0]
        for q in qs[1:]:
            inside = np.maximum(inside, q)
        return outside + np.minimum(inside, 0.0)

    def may_block(self, points: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Rays [N] that pass within the bounding sphere (in front of their origin)."""
        rel = self.centre - points
        along = _dot(rel, dirs)
        dist2 = _dot(rel, rel) - along * along
        return (along > -self.radius) & (dist2 < self.radius * self.radius)


def _srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product over the last axis (of size 3); faster than a numpy reduction."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _norm(a: np.ndarray) -> np.ndarray:
    return np.sqrt(_dot(a, a))


def _hit_sphere(origin, direction, centre, radius, want_normal):
    oc = origin - centre
    b = _dot(oc, direction)
    c = _dot(oc, oc) - radius * radius
    disc = b * b - c
    ok = disc > 0
    t = -b - np.sqrt(np.where(ok, disc, 0.0))
    t = np.where(ok & (t > _EPS), t, np.inf).astype(np.float32)
    if not want_normal:
        return t, None
    hit = origin + np.where(np.isfinite(t), t, 0.0)[:, None] * direction
    return t, (hit - centre) / radius


def _safe(d: np.ndarray) -> np.ndarray:
    return np.where(np.abs(d) < 1e-9, np.float32(1e-9), d)


def _hit_box(origin, direction, shape: _Shape, want_normal):
    c, s, h = shape.cos, shape.sin, shape.half
    oc = origin - shape.centre
    if oc.ndim == 1:
        oc = np.broadcast_to(oc, direction.shape)
    # Local frame: rotate by -theta about z.
    o_loc = (c * oc[:, 0] + s * oc[:, 1], -s * oc[:, 0] + c * oc[:, 1], oc[:, 2])
    d_loc = (
        c * direction[:, 0] + s * direction[:, 1],
        -s * direction[:, 0] + c * direction[:, 1],
        direction[:, 2],
    )
    t_near = np.full(direction.shape[0], -np.inf, dtype=np.float32)
    t_far = np.full(direction.shape[0], np.inf, dtype=np.float32)
    axis = np.zeros(direction.shape[0], dtype=np.int8)
    for a in range(3):
        inv = 1.0 / _safe(d_loc[a])
        t1 = (-h - o_loc[a]) * inv
        t2 = (h - o_loc[a]) * inv
        lo = np.minimum(t1, t2)
        if want_normal:
            axis = np.where(lo > t_near, np.int8(a), axis)
        t_near = np.maximum(t_near, lo)
        t_far = np.minimum(t_far, np.maximum(t1, t2))
    hit = (t_near <= t_far) & (t_near > _EPS)
    t = np.where(hit, t_near, np.inf).astype(np.float32)
    if not want_normal:
        return t, None
    normal = np.zeros(direction.shape, dtype=np.float32)
    for a, world in enumerate(((c, s, 0.0), (-s, c, 0.0), (0.0, 0.0, 1.0))):
        sel = axis == a
        sign = -np.sign(d_loc[a][sel])
        normal[sel] = sign[:, None] * np.asarray(world, dtype=np.float32)
    return t, normal


def _hit_cylinder(origin, direction, centre, radius, want_normal):
    oc = origin - centre
    if oc.ndim == 1:
        oc = np.broadcast_to(oc, direction.shape)
    ox, oy, oz = oc[:, 0], oc[:, 1], oc[:, 2]
    dx, dy, dz = direction[:, 0], direction[:, 1], direction[:, 2]
    h = radius  # CLEVR cylinders are as tall as they are wide
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - radius * radius
    disc = b * b - a * c
    ok = (disc > 0) & (a > 1e-12)
    t_side = (-b - np.sqrt(np.where(ok, disc, 0.0))) / np.where(ok, a, 1.0)
    ok &= (t_side > _EPS) & (np.abs(oz + t_side * dz) <= h)
    t = np.where(ok, t_side, np.inf)
    cap = np.zeros(direction.shape[0], dtype=np.int8)  # 0 side, +1 top, -1 bottom
    dz_safe = _safe(dz)
    for zc, label in ((h, 1), (-h, -1)):
        tc = (zc - oz) / dz_safe
        px, py = ox + tc * dx, oy + tc * dy
        okc = (tc > _EPS) & (px * px + py * py <= radius * radius) & (tc < t)
        t = np.where(okc, tc, t)
        cap = np.where(okc, np.int8(label), cap)
    t = t.astype(np.float32)
    if not want_normal:
        return t, None
    tt = np.where(np.isfinite(t), t, 0.0)
    normal = np.zeros(direction.shape, dtype=np.float32)
    normal[:, 0] = np.where(cap == 0, (ox + tt * dx) / radius, 0.0)
    normal[:, 1] = np.where(cap == 0, (oy + tt * dy) / radius, 0.0)
    normal[:, 2] = cap
    return t, normal


class _View:
    """The camera rays of an output grid: a window of the native frame at (rows, cols)."""

    def __init__(
        self,
        scene: Mapping[str, Any],
        rows: int,
        cols: int,
        window: Sequence[float] | None,
    ) -> None:
        r0, r1, c0, c1 = window if window is not None else (0, NATIVE_SIZE[1], 0, NATIVE_SIZE[0])
        if not (r0 < r1 and c0 < c1):
            raise ConfigError(f"window must be (r0, r1, c0, c1) with r0 < r1, c0 < c1: {window}")
        self.box = (float(r0), float(r1), float(c0), float(c1))
        self.rows, self.cols = rows, cols
        self.pixel_h, self.pixel_w = (r1 - r0) / rows, (c1 - c0) / cols
        self.scene = scene
        eye, self.forward, self.right, self.up = camera_basis(camera_location(scene))
        self.eye = eye.astype(np.float32)
        self.focal = NATIVE_SIZE[0] * FOCAL_OVER_SENSOR
        v = r0 + (np.arange(rows) + 0.5) * self.pixel_h
        u = c0 + (np.arange(cols) + 0.5) * self.pixel_w
        self.dirs = self.directions(u[None, :], v[:, None])  # [rows, cols, 3]

    def directions(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Unit ray directions [..., 3] through native pixel coordinates (u, v)."""
        x = (np.asarray(u, dtype=np.float64) - NATIVE_SIZE[0] / 2) / self.focal
        y = -(np.asarray(v, dtype=np.float64) - NATIVE_SIZE[1] / 2) / self.focal
        x, y = np.broadcast_arrays(x, y)
        d = self.forward + x[..., None] * self.right + y[..., None] * self.up
        return normalize(d).astype(np.float32)

    def bbox(self, points: np.ndarray, pad: int = 1) -> tuple[int, int, int, int] | None:
        """Grid rows/cols (r0, r1, c0, c1) covering the projection of `points`; None if empty."""
        uvd = project(self.scene, points, NATIVE_SIZE)
        cols = (uvd[:, 0] - self.box[2]) / self.pixel_w - 0.5
        rows = (uvd[:, 1] - self.box[0]) / self.pixel_h - 0.5
        a = max(int(math.floor(rows.min())) - pad, 0)
        b = min(int(math.ceil(rows.max())) + pad + 1, self.rows)
        c = max(int(math.floor(cols.min())) - pad, 0)
        d = min(int(math.ceil(cols.max())) + pad + 1, self.cols)
        if a >= b or c >= d:
            return None
        return a, b, c, d

    def cull(self, points: np.ndarray) -> np.ndarray:
        """Flat indices of the grid rays whose pixels cover the projection of `points`."""
        box = self.bbox(points)
        if box is None:
            return np.zeros(0, dtype=np.int64)
        a, b, c, d = box
        return (np.arange(a, b)[:, None] * self.cols + np.arange(c, d)[None, :]).ravel()


def _no_cull(points: np.ndarray) -> None:
    """Culling for scattered rays: none (every ray is tested)."""
    return None


def _primary(view: _View, shapes: Sequence[_Shape], want_normal: bool):
    """Nearest hits of the grid rays: ids [R, C] (0 ground), t [R, C], normals [R, C, 3]."""
    dirs = view.dirs
    t = _ground_t(view.eye[2], dirs[..., 2])
    ids = np.zeros(t.shape, dtype=np.uint8)
    normal = None
    if want_normal:
        normal = np.zeros(dirs.shape, dtype=np.float32)
        normal[..., 2] = 1.0
    for k, shape in enumerate(shapes):
        box = view.bbox(shape.corners())
        if box is None:
            continue
        a, b, c, d = box
        sub = dirs[a:b, c:d].reshape(-1, 3)
        tk, nk = shape.intersect(view.eye, sub, want_normal)
        tk = tk.reshape(b - a, d - c)
        closer = tk < t[a:b, c:d]
        t[a:b, c:d][closer] = tk[closer]
        ids[a:b, c:d][closer] = k + 1
        if want_normal:
            normal[a:b, c:d][closer] = nk.reshape(b - a, d - c, 3)[closer]
    return ids, t, normal


def _primary_flat(eye: np.ndarray, dirs: np.ndarray, shapes: Sequence[_Shape]):
    """Nearest hits of scattered camera rays dirs [N, 3]: ids [N], t [N], normals [N, 3]."""
    t = _ground_t(eye[2], dirs[:, 2])
    ids = np.zeros(t.shape, dtype=np.uint8)
    normal = np.zeros(dirs.shape, dtype=np.float32)
    normal[:, 2] = 1.0
    for k, shape in enumerate(shapes):
        cand = np.flatnonzero(shape.may_block(eye, dirs))
        if cand.size == 0:
            continue
        tk, nk = shape.intersect(eye, dirs[cand], want_normal=True)
        closer = tk < t[cand]
        sel = cand[closer]
        t[sel] = tk[closer]
        ids[sel] = k + 1
        normal[sel] = nk[closer]
    return ids, t, normal


def _ground_t(height: float, dz: np.ndarray) -> np.ndarray:
    """Distance along rays (from a point at `height`) to the ground z = 0 (inf if never)."""
    return np.where(dz < -1e-6, -height / np.minimum(dz, -1e-6), np.inf).astype(np.float32)


def render_ids(
    scene: Mapping[str, Any], width: int, height: int, window: Sequence[float] | None
) -> np.ndarray:
    """Instance ids uint8 [height, width] of `scene` (0 = ground), one sample per pixel."""
    view = _View(scene, height, width, window)
    ids, _, _ = _primary(view, [_Shape(o) for o in scene["objects"]], want_normal=False)
    return ids


def render_scene(
    scene: Mapping[str, Any],
    width: int = NATIVE_SIZE[0],
    height: int = NATIVE_SIZE[1],
    window: Sequence[float] | None = None,
    supersample: int = 2,
    *,
    shadows: bool = True,
    reflections: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast `scene` into an image and its instance mask.

    Args:
        scene: a scene dict (CLEVR object fields; the optional `render` entry sets the camera,
            key light and light jitter; scenes read from CLEVR JSON use the default ones).
        width, height: output size in pixels.
        window: the part of the native 480x320 frame to render, (r0, r1, c0, c1) in native
            pixels (e.g. `OFFICIAL_CROP`); None = the whole frame. It is sampled at the output
            size whatever its own size (so the full frame at 128x128 is squeezed like the
            official resize of a 480x320 image).
        supersample: s gives s x s samples per pixel where it matters (object silhouettes and
            edges between faces); smooth areas get one sample.
        shadows, reflections: switch off for speed.
    Returns:
        image uint8 [height, width, 3] and mask uint8 [height, width] (0 = background,
        i + 1 = object i; at edges, the id covering most of the pixel's samples).
    """
    s = max(int(supersample), 1)
    shapes = [_Shape(o) for o in scene["objects"]]
    render = scene.get("render") or {}
    view = _View(scene, height, width, window)
    ids, t, normal = _primary(view, shapes, want_normal=True)
    radiance = _shade(
        view.eye,
        view.dirs.reshape(-1, 3),
        ids.ravel(),
        t.ravel(),
        normal.reshape(-1, 3),
        shapes,
        render,
        view.cull,
        shadows,
        reflections,
    ).reshape(height, width, 3)
    mask = ids
    if s > 1:
        rows, cols = np.nonzero(_edges(ids, normal))
        if rows.size:
            # s x s samples in each edge pixel, sample-major: [s * s * E].
            frac = (np.arange(s) + 0.5) / s
            fv = view.box[0] + (rows[None, None, :] + frac[:, None, None]) * view.pixel_h
            fu = view.box[2] + (cols[None, None, :] + frac[None, :, None]) * view.pixel_w
            dirs = view.directions(fu, fv).reshape(-1, 3)
            f_ids, f_t, f_normal = _primary_flat(view.eye, dirs, shapes)
            f_rad = _shade(
                view.eye,
                dirs,
                f_ids,
                f_t,
                f_normal,
                shapes,
                render,
                _no_cull,
                shadows,
                reflections,
            )
            radiance[rows, cols] = f_rad.reshape(s * s, rows.size, 3).mean(axis=0)
            mask[rows, cols] = _mode(f_ids.reshape(s * s, rows.size))
    image = np.round(_linear_to_srgb(radiance) * 255.0).astype(np.uint8)
    return image, mask


def _edges(ids: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Pixels [R, C] next to a change of id or a crease (normals more than ~18 deg apart)."""
    edge = np.zeros(ids.shape, dtype=bool)
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = (slice(0, ids.shape[0] - dr), slice(max(-dc, 0), ids.shape[1] - max(dc, 0)))
        b = (slice(dr, None), slice(max(dc, 0), ids.shape[1] - max(-dc, 0)))
        diff = (ids[a] != ids[b]) | (_dot(normal[a], normal[b]) < 0.95)
        edge[a] |= diff
        edge[b] |= diff
    return edge


def _mode(ids: np.ndarray) -> np.ndarray:
    """The most frequent value along axis 0 of ids [S, E] (ties: the lower value)."""
    best = np.zeros(ids.shape[1], dtype=np.int32)
    mode = np.zeros(ids.shape[1], dtype=ids.dtype)
    for k in np.unique(ids):
        count = (ids == k).sum(axis=0, dtype=np.int32)
        better = count > best
        best[better] = count[better]
        mode[better] = k
    return mode


def _shade(eye, dirs, ids, t, normal, shapes, render, cull, shadows, reflections):
    """Linear radiance [N, 3] of camera rays dirs [N, 3] with their hits (ids, t, normal)."""
    points = eye + t[:, None] * dirs
    scale = float(render.get("light_scale", 1.0))
    key_pos = np.asarray(render.get("key_light", KEY_LIGHT), dtype=np.float32)

    to_light = key_pos - points
    dist = _norm(to_light)
    key_dir = to_light / dist[:, None]
    falloff = np.sqrt(np.sqrt(float(np.dot(key_pos, key_pos))) / dist)  # a gentle gradient
    visible = np.ones(ids.shape, dtype=np.float32)
    if shadows:
        for k, shape in enumerate(shapes):
            _soft_shadow(shape, k + 1, points, key_dir, dist, ids, visible, key_pos, cull)
    ao = _ambient_occlusion(shapes, points, normal, ids, cull)

    key_term = _KEY_POWER * scale * np.clip(_dot(normal, key_dir), 0.0, None) * falloff * visible
    diffuse = (
        _AMBIENT * ao
        + key_term
        + _FILL_POWER * scale * np.clip(_dot(normal, _FILL_DIR), 0.0, None) * ao
        + _BACK_POWER * np.clip(_dot(normal, _BACK_DIR), 0.0, None)
    )
    albedo_table = np.stack([_GROUND_RGB] + [sh.albedo for sh in shapes]).astype(np.float32)
    metal_table = np.array([False] + [sh.metal for sh in shapes])
    albedo = albedo_table[ids]
    metal = metal_table[ids]

    n_dot_h = np.clip(_dot(normal, normalize(key_dir - dirs)), 0.0, 1.0)
    sheen = (0.05 * key_term * n_dot_h**10) * (ids > 0)
    radiance = albedo * diffuse[:, None] + sheen[:, None]

    if metal.any():
        sel = np.flatnonzero(metal)
        p, n, d = points[sel], normal[sel], dirs[sel]
        refl = d - 2.0 * _dot(d, n)[:, None] * n
        env = _reflect(shapes, ids[sel], p, refl, key_pos, scale, visible[sel], reflections)
        alb = albedo[sel]
        highlight = (key_term[sel] * n_dot_h[sel] ** 60)[:, None]
        radiance[sel] = 0.2 * alb * diffuse[sel][:, None] + (0.8 * alb + 0.1) * env + highlight
    return radiance


def _soft_shadow(shape, own_id, points, key_dir, dist, ids, visible, key_pos, cull):
    """Darken `visible` [N] where `shape` blocks (or nearly blocks) the key light.

    Exact occluder hits give 0; rays that pass close by get a penumbra from the smallest
    sdf / (k t) along the ray (k = light radius / light distance), sampled at a few points.
    `cull` maps world points to the indices of the rays that may see them (None = all).
    """
    corners = shape.corners()
    hull = [corners]
    for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
        light = key_pos + 2.5 * _KEY_RADIUS * np.array([dx, dy, 0.0])
        ray = corners - light
        t_ground = -light[2] / np.minimum(ray[:, 2], -1e-6)
        hull.append(light + t_ground[:, None] * ray)
    idx = cull(np.concatenate(hull))
    if idx is None:
        idx = np.arange(points.shape[0])
    if idx.size == 0:
        return
    p, ld = points[idx], key_dir[idx]
    spread = _KEY_RADIUS / dist[idx]
    rel = shape.centre - p
    along = _dot(rel, ld)
    miss2 = _dot(rel, rel) - along * along
    reach = shape.radius + spread * (np.abs(along) + shape.radius)
    cand = (along > 0) & (miss2 < reach * reach) & (ids[idx] != own_id)
    if not cand.any():
        return
    idx, p, ld, spread, along, reach = (x[cand] for x in (idx, p, ld, spread, along, reach))
    tk, _ = shape.intersect(p, ld, want_normal=False)
    frac = np.linspace(-1.0, 1.0, _SHADOW_STEPS, dtype=np.float32)
    ts = np.maximum(along[:, None] + frac[None, :] * reach[:, None], _EPS)  # [M, S]
    samples = p[:, None, :] + ts[..., None] * ld[:, None, :]
    sdf = shape.sdf(samples.reshape(-1, 3)).reshape(ts.shape)
    res = np.clip((sdf / (spread[:, None] * ts)).min(axis=1), 0.0, 1.0)
    vis = res * res * (3.0 - 2.0 * res)  # smoothstep
    vis[np.isfinite(tk)] = 0.0
    visible[idx] = np.minimum(visible[idx], vis)


def _ambient_occlusion(shapes, points, normal, ids, cull):
    """Contact darkening near objects [N]: a sum of analytic sphere occlusions."""
    occ = np.zeros(ids.shape, dtype=np.float32)
    for k, shape in enumerate(shapes):
        r = shape.half * 1.15
        x, y, _ = shape.centre
        reach = 4.0 * r
        corners = [
            [x + sx * reach, y + sy * reach, z]
            for sx in (-1, 1)
            for sy in (-1, 1)
            for z in (0.0, 2.0 * shape.half)
        ]
        idx = cull(np.array(corners))
        if idx is None:
            idx = np.arange(points.shape[0])
        if idx.size == 0:
            continue
        rel = shape.centre - points[idx]
        d2 = _dot(rel, rel)
        cos = np.clip(_dot(rel, normal[idx]), 0.0, None) / np.sqrt(d2)
        term = np.clip(r * r / d2, 0.0, 1.0) * cos
        term[ids[idx] == k + 1] = 0.0
        occ[idx] += term
    return 1.0 - 0.8 * np.clip(occ, 0.0, 1.0)


def _environment(dirs, key_pos):
    """A dim studio seen in mirrors: dark above, broad bright reflections of the lights."""
    key_dir = normalize(key_pos.astype(np.float32))
    glow = 1.2 * np.clip(_dot(dirs, key_dir), 0.0, None) ** 6
    glow += 0.5 * np.clip(_dot(dirs, _FILL_DIR), 0.0, None) ** 8
    horizon = (1.0 - np.clip(np.abs(dirs[:, 2]), 0.0, 1.0)) ** 4
    return (0.03 + 0.12 * horizon + glow)[:, None] * np.ones(3, dtype=np.float32)


def _reflect(shapes, own_ids, points, dirs, key_pos, scale, visible, trace):
    """Radiance [M, 3] seen along reflected rays (other objects and the ground if `trace`)."""
    m = points.shape[0]
    env = _environment(dirs, key_pos)
    if not trace:
        return env
    t = np.where(dirs[:, 2] < -1e-6, -points[:, 2] / np.minimum(dirs[:, 2], -1e-6), np.inf)
    hit_ids = np.zeros(m, dtype=np.int64)
    normal = np.zeros((m, 3), dtype=np.float32)
    normal[:, 2] = 1.0
    for k, shape in enumerate(shapes):
        cand = np.flatnonzero(shape.may_block(points, dirs) & (own_ids != k + 1))
        if cand.size == 0:
            continue
        tk, nk = shape.intersect(points[cand], dirs[cand], want_normal=True)
        closer = tk < t[cand]
        sel = cand[closer]
        t[sel] = tk[closer]
        hit_ids[sel] = k + 1
        normal[sel] = nk[closer]
    albedo = np.stack([_GROUND_RGB] + [sh.albedo for sh in shapes]).astype(np.float32)[hit_ids]
    hit = np.isfinite(t)
    p = points + np.where(hit, t, 0.0)[:, None] * dirs
    to_light = normalize(key_pos - p)
    light = _AMBIENT + _KEY_POWER * scale * np.clip(_dot(normal, to_light), 0.0, None)
    # The floor seen next to an object is in its shadow/contact region: darken it with the
    # primary visibility as a cheap stand-in for a second shadow ray.
    light = np.where(hit_ids == 0, light * (0.5 + 0.5 * visible), light)
    return np.where(hit[:, None], albedo * light[:, None], env).astype(np.float32)

