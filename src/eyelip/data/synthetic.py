"""Built-in synthetic sample in CelebAMask-HQ's own layout, written as one zip.

A fresh clone trains on this (no download, no licence), so the faces are cartoonish but
varied and learnable: skin tone, pose, scale, lighting, background, open/closed eyes and mouth,
glasses, hats, hair over an eye, jewellery. Every one of the 18 parts is drawn, and the
distractors (brows, inner mouth, blush, eye shadow, sunglasses) look somewhat like eyes or lips,
so a model only scores well if it learns which parts to fuse.

Drawing happens in face-local "canonical" coordinates (face centre at 0, face half-width 1;
``l_*`` parts sit at u > 0, the image's right, as in the real data) mapped to pixels by one
similarity transform. Image and masks are painted from the same rasterised regions in painting
order: occluders (hair, hat, face over ears, ...) cut the masks they cover, while features
painted on the face (eyes, nose, lips) overlap skin, as the official annotations do.
"""

from __future__ import annotations

import functools
import io
import math
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from eyelip.atomic import atomic_path
from eyelip.data.layout import IMAGE_DIR, MASK_DIR, MASKS_PER_FOLDER, PARTS, image_relpath, mask_relpath
from eyelip.data.parallel import map_samples

ZIP_ROOT = "CelebAMask-HQ"
# Fixed entry metadata so the same seed gives a byte-identical zip on any machine.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

_Region = tuple[slice, slice, np.ndarray]  # rows, cols, bool mask of the bbox

# Skin tones from pale to deep; a face's tone is interpolated between neighbours.
_SKIN = np.array(
    [[250, 222, 205], [236, 192, 160], [214, 164, 125], [180, 128, 92], [140, 95, 65], [100, 66, 45], [70, 46, 34]],
    np.float32,
)
_HAIR = np.array(
    [
        [22, 18, 16],
        [45, 32, 25],
        [75, 50, 35],
        [115, 80, 50],
        [160, 115, 70],
        [205, 175, 120],
        [150, 70, 40],
        [150, 150, 150],
        [215, 212, 205],
    ],
    np.float32,
)
_HAIR_P = np.array([0.22, 0.2, 0.16, 0.12, 0.08, 0.09, 0.05, 0.05, 0.03])
_IRIS = np.array([[45, 28, 18], [90, 55, 30], [70, 110, 150], [80, 110, 70], [110, 115, 120]], np.float32)
_METAL = np.array([[212, 175, 55], [200, 200, 205], [240, 235, 225], [30, 30, 30]], np.float32)


class _Canvas:
    """RGB float image plus full-size bool part masks, painted region by region."""

    def __init__(
        self, rng: np.random.Generator, size: int, center: tuple[float, float], scale: float, angle: float
    ) -> None:
        self.rng, self.size = rng, size
        self.img = np.zeros((size, size, 3), np.float32)
        self.masks: dict[str, np.ndarray] = {}
        self.cx, self.cy, self.s = center[0], center[1], scale
        self.ca, self.sa = math.cos(angle), math.sin(angle)

    def to_px(self, pts: np.ndarray) -> np.ndarray:
        u, v = pts[:, 0], pts[:, 1]
        return np.stack(
            [self.cx + self.s * (self.ca * u - self.sa * v), self.cy + self.s * (self.sa * u + self.ca * v)], 1
        )

    def raster(self, *polys: tuple[np.ndarray, int], within: _Region | None = None) -> _Region | None:
        """Fill canonical polygons (fill 1 adds, 0 carves) inside their joint bbox only, or
        inside ``within``'s bbox, clipped to its mask (e.g. the iris inside the eye opening)."""
        px = [(self.to_px(p), f) for p, f in polys]
        if within is not None:
            y0, y1, x0, x1 = within[0].start, within[0].stop, within[1].start, within[1].stop
        else:
            allp = np.concatenate([p for p, _ in px])
            x0, y0 = np.floor(allp.min(0)).astype(int)
            x1, y1 = np.ceil(allp.max(0)).astype(int) + 1
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.size), min(y1, self.size)
        if x1 <= x0 or y1 <= y0:
            return None
        im = Image.new("L", (x1 - x0, y1 - y0), 0)
        draw = ImageDraw.Draw(im)
        for p, f in px:
            draw.polygon([(float(x) - x0, float(y) - y0) for x, y in p], fill=255 * f)
        m = np.asarray(im) > 0
        if within is not None:
            m = m & within[2]
        if not m.any():
            return None
        return slice(y0, y1), slice(x0, x1), m

    def coords(self, reg: _Region) -> tuple[np.ndarray, np.ndarray]:
        """Canonical (u, v) of every pixel in the region's bbox, for shading fields."""
        sy, sx, _ = reg
        ys, xs = np.mgrid[sy, sx].astype(np.float32)
        dx, dy = xs - self.cx, ys - self.cy
        return (self.ca * dx + self.sa * dy) / self.s, (-self.sa * dx + self.ca * dy) / self.s

    def paint(
        self,
        reg: _Region | None,
        color: np.ndarray,
        alpha: float | np.ndarray = 1.0,
        shade: np.ndarray | None = None,
        grain: float = 0.0,
    ) -> None:
        if reg is None:
            return
        sy, sx, m = reg
        patch = self.img[sy, sx]
        src = np.asarray(color, np.float32)
        src = src * shade[..., None] if shade is not None else np.broadcast_to(src, patch.shape)
        if grain:
            src = src + grain * self.rng.standard_normal(m.shape, np.float32)[..., None]
        a = (m * alpha).astype(np.float32)[..., None]
        patch += a * (src - patch)

    def label(self, part: str, reg: _Region | None, cuts: tuple[str, ...] | str = ()) -> None:
        """Add the region to ``part``; it covers (removes itself from) the ``cuts`` parts."""
        if reg is None:
            return
        sy, sx, m = reg
        if cuts == "all":
            cuts = tuple(p for p in self.masks if p != part)
        for c in cuts:
            if c in self.masks:
                self.masks[c][sy, sx] &= ~m
        self.masks.setdefault(part, np.zeros((self.size, self.size), bool))[sy, sx] |= m

    def unlabel(self, part: str) -> None:
        self.masks.pop(part, None)


def _ellipse(cx: float, cy: float, rx: float, ry: float, rot: float = 0.0, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(rot), math.sin(rot)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _band(xs: np.ndarray, ytop: np.ndarray, ybot: np.ndarray) -> np.ndarray:
    """Polygon between two curves sampled at the same xs."""
    return np.concatenate([np.stack([xs, ytop], 1), np.stack([xs[::-1], ybot[::-1]], 1)])


def _polyline_band(pts: np.ndarray, width: float) -> np.ndarray:
    """Thick polyline as a polygon (offset both sides along the normals)."""
    d = np.gradient(pts, axis=0)
    nrm = np.stack([-d[:, 1], d[:, 0]], 1) / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-9)
    w = np.broadcast_to(np.asarray(width, np.float64), (len(pts),))[:, None] / 2
    return np.concatenate([pts + nrm * w, (pts - nrm * w)[::-1]])


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return (1 - t) * a + t * b


# Per-pixel fields use only operations IEEE rounds exactly (+ - * / sqrt) or go through _sin: NumPy picks
# its SIMD loop for float32 ``**`` and ``sin`` by CPU, and an AVX-512 loop differs from the AVX2 one in
# the last bit, which flipped 3 pixel values of one JPEG and so the sample's md5 (tests/test_sample_bytes.py).
def _soft(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    """Smooth elliptical falloff, 1 at the centre and 0 outside: for blush, shadow, highlights."""
    d = np.clip(1 - ((u - cu) / ru) ** 2 - ((v - cv) / rv) ** 2, 0, 1)
    return d * np.sqrt(d)  # d ** 1.5


def _sin(x: np.ndarray) -> np.ndarray:
    """sin of a float32 field, the same on every CPU: computed in float64, whose last-bit differences
    between CPUs vanish when rounded back to float32."""
    return np.sin(x.astype(np.float64)).astype(np.float32)


def _background(c: _Canvas) -> None:
    rng, n = c.rng, c.size
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    c2 = np.clip(c1 + rng.normal(0, 60, 3), 0, 255).astype(np.float32)
    th = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(0, 1, n, dtype=np.float32)
    g = np.clip(0.5 + (ramp[None, :] - 0.5) * math.cos(th) + (ramp[:, None] - 0.5) * math.sin(th), 0, 1)
    c.img[:] = c1 + g[..., None] * (c2 - c1)
    # Low-frequency blotches: out-of-focus scenery.
    k = int(rng.integers(3, 10))
    blot = rng.normal(0, rng.uniform(5, 35), (k, k, 3)).astype(np.float32)
    c.img += np.stack(
        [np.asarray(Image.fromarray(blot[..., i], "F").resize((n, n), Image.BICUBIC)) for i in range(3)], -1
    )
    if rng.random() < 0.35:  # bokeh discs
        for _ in range(int(rng.integers(3, 12))):
            u, v = rng.uniform(-2.5, 2.5), rng.uniform(-2.5, 2.5)
            r = rng.uniform(0.1, 0.5)
            c.paint(c.raster((_ellipse(u, v, r, r), 1)), rng.uniform(0, 255, 3), rng.uniform(0.2, 0.6))
    if rng.random() < 0.15:  # stripes: wall panels, blinds
        per = rng.uniform(0.03, 0.15) * n
        ph = (
            np.sin(2 * np.pi * (np.arange(n) / per))[None, :]
            if rng.random() < 0.5
            else np.sin(2 * np.pi * (np.arange(n) / per))[:, None]
        )
        c.img += (rng.uniform(5, 25) * ph)[..., None].astype(np.float32)


def _almond(
    cx: float, cy: float, hw: float, hu: float, hl: float, tilt: float, n: int = 24
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    t = np.linspace(-1, 1, n)
    xs = cx + hw * t
    base = cy + tilt * t
    up = base - hu * (1 - t**2) ** 0.8 * (1 + 0.15 * t)
    lo = base + hl * (1 - t**2) ** 0.9
    return xs, up, lo, _band(xs, up, lo)


def render_face(rng: np.random.Generator, image_size: int, mask_size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """uint8 HxWx3 image (image_size) and {part: bool mask (mask_size x mask_size)} for visible parts only."""
    n = image_size
    scale = n * rng.uniform(0.18, 0.31)
    center = (n * (0.5 + rng.normal(0, 0.03)), n * (0.55 + rng.normal(0, 0.03)))
    c = _Canvas(rng, n, center, scale, rng.normal(0, 0.1))
    _background(c)

    tone = int(rng.integers(0, len(_SKIN) - 1))
    skin = _mix(_SKIN[tone], _SKIN[tone + 1], rng.random())
    skin = np.clip(skin * rng.uniform(0.92, 1.06, 3), 0, 255)
    hair_col = _HAIR[rng.choice(len(_HAIR), p=_HAIR_P)] * rng.uniform(0.85, 1.15)
    if rng.random() < 0.04:  # dyed
        hair_col = rng.uniform(30, 230, 3)
    yaw = rng.uniform(-0.22, 0.22)

    def fx(u: float) -> float:  # head turn: features slide sideways, more near the midline
        return u + yaw * (1 - min(u * u, 1))

    def fw(u: float) -> float:  # and the far side foreshortens
        return 1 - 1.5 * yaw * u

    # --- behind the face: long hair, neck, clothes, ears ---------------------------------
    hair_top_ry = rng.uniform(1.35, 1.6)
    hair_rx = rng.uniform(1.12, 1.4)
    bald = rng.random() < 0.05
    curly = rng.uniform(0.0, 0.12) if rng.random() < 0.3 else 0.0  # wavy outline amplitude
    if not bald and rng.random() < 0.7:
        bottom = rng.uniform(0.6, 2.8)
        t = np.linspace(np.pi, 2 * np.pi, 24)
        top = np.stack([hair_rx * np.cos(t), -0.3 + hair_top_ry * np.sin(t)], 1)
        flare = rng.uniform(0.95, 1.35)
        k = np.linspace(0, 1, 12)[:, None]
        right = np.stack([hair_rx * (1 + (flare - 1) * k[:, 0]), -0.3 + (bottom + 0.3) * k[:, 0]], 1)
        right[:, 0] += curly * np.sin(k[:, 0] * rng.uniform(10, 25))
        left = right[::-1] * np.array([-1, 1])
        reg = c.raster((np.concatenate([top, right, left]), 1))
        if reg is not None:
            u, v = c.coords(reg)
            strands = 1 + 0.12 * _sin(rng.uniform(25, 60) * (u + 0.15 * _sin(3 * v)))
            c.paint(reg, hair_col * 0.8, shade=strands, grain=6)
            c.label("hair", reg)

    nw = rng.uniform(0.45, 0.62)
    neck_poly = np.array([[-nw, 0.5], [nw, 0.5], [nw * 1.08, 2.9], [-nw * 1.08, 2.9]])
    reg = c.raster((neck_poly, 1))
    if reg is not None:
        u, v = c.coords(reg)
        c.paint(reg, skin * 0.86, shade=np.clip(0.75 + 0.2 * (v - 0.9), 0.75, 1.0), grain=3)
        c.label("neck", reg, cuts="all")

    vc = rng.uniform(1.45, 1.95)
    depth = rng.uniform(0.05, 0.6)
    t = np.linspace(-1, 1, 13)
    neckline = np.stack([nw * 1.15 * t, vc + depth * (1 - np.abs(t) ** rng.uniform(1, 2.5))], 1)
    shoulder = rng.uniform(0.2, 0.5)
    cloth_poly = np.concatenate([neckline, [[2.3, vc + shoulder], [4.0, 4.0], [-4.0, 4.0], [-2.3, vc + shoulder]]])
    reg = c.raster((cloth_poly, 1))
    if reg is not None:
        col = rng.uniform(10, 245, 3)
        u, v = c.coords(reg)
        shade = 1 + 0.1 * _sin(rng.uniform(2, 5) * u)
        if rng.random() < 0.3:  # striped or patterned cloth
            shade = shade + 0.25 * (_sin(rng.uniform(8, 30) * (v if rng.random() < 0.5 else u)) > 0)
        c.paint(reg, col, shade=shade, grain=5)
        c.label("cloth", reg, cuts="all")

    if rng.random() < 0.12:  # necklace over neck / neckline
        t = np.linspace(-1, 1, 25)
        vn = min(vc, rng.uniform(1.3, 1.7))
        pts = np.stack([nw * 0.95 * t, vn - 0.12 + rng.uniform(0.15, 0.45) * (1 - t**2)], 1)
        reg = c.raster((_polyline_band(pts, rng.uniform(0.025, 0.06)), 1))
        c.paint(reg, _METAL[rng.integers(0, 3)], grain=12)
        c.label("neck_l", reg)

    ears = {}
    for sgn, part in ((1, "l_ear"), (-1, "r_ear")):
        eu, ev = sgn * 0.96 - 0.5 * yaw, rng.uniform(-0.2, -0.05)
        ery = rng.uniform(0.22, 0.3)
        reg = c.raster((_ellipse(eu, ev, rng.uniform(0.11, 0.15), ery, sgn * 0.15), 1))
        if reg is not None:
            u, v = c.coords(reg)
            c.paint(reg, skin * 0.9, shade=1 - 0.25 * _soft(u, v, eu, ev, 0.07, ery * 0.7), grain=3)
            c.label(part, reg, cuts="all")
        ears[sgn] = (eu, ev + ery * 0.85)

    # --- the face ----------------------------------------------------------------------
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    st = np.sin(t)
    jaw = rng.uniform(0.15, 0.35)
    chin = rng.uniform(1.05, 1.22)
    fwid = rng.uniform(0.92, 1.04)
    face = np.stack([fwid * np.cos(t) * (1 - jaw * np.clip(st, 0, 1) ** 2), np.where(st > 0, chin, 1.35) * st], 1)
    reg_face = c.raster((face, 1))
    u, v = c.coords(reg_face)
    face_shade = 1 - 0.22 * np.clip((u / fwid) ** 2 + 0.3 * (v / chin) ** 2 - 0.35, 0, 1)
    c.paint(reg_face, skin, shade=face_shade, grain=2.5)
    c.label("skin", reg_face, cuts=("l_ear", "r_ear", "neck", "hair", "cloth", "neck_l"))
    if rng.random() < 0.5:  # blush: lip-coloured but not lips
        for sgn in (1, -1):
            c.paint(
                reg_face,
                np.array([220, 90, 100]),
                alpha=rng.uniform(0.15, 0.4) * _soft(u, v, fx(sgn * 0.52), 0.25, 0.25, 0.17),
            )
    if rng.random() < 0.12:  # stubble on the jaw
        c.paint(
            reg_face,
            hair_col,
            alpha=rng.uniform(0.15, 0.35) * np.clip((v - 0.35) * 3, 0, 1) * (np.abs(u - fx(0)) < 0.9),
            grain=15,
        )

    # Earrings hang from visible lobes.
    if rng.random() < 0.15:
        metal = _METAL[rng.integers(0, 4)]
        hoop = rng.random() < 0.5
        for sgn, (eu, ev) in ears.items():
            x, y = np.round(c.to_px(np.array([[eu, ev - 0.03]]))[0]).astype(int)
            ear = c.masks.get("l_ear" if sgn > 0 else "r_ear")
            if ear is None or not (0 <= x < n and 0 <= y < n and ear[y, x]):
                continue  # only hang earrings from a visible lobe
            if hoop:
                r = rng.uniform(0.07, 0.16)
                th = rng.uniform(0.012, 0.03)
                reg = c.raster((_ellipse(eu, ev + r, r, r), 1), (_ellipse(eu, ev + r, r - th, r - th), 0))
            else:
                r = rng.uniform(0.025, 0.05)
                reg = c.raster((_ellipse(eu, ev + r * 0.5, r, r), 1))
            c.paint(reg, metal, grain=15)
            c.label("ear_r", reg)

    # Nose: shading and nostrils; its mask is the whole nose region.
    nu = fx(0) + 0.25 * yaw
    nb, nt = rng.uniform(0.26, 0.36), rng.uniform(-0.35, -0.2)
    na = rng.uniform(0.17, 0.24)
    nose = np.array(
        [
            [nu - 0.07, nt],
            [nu + 0.07, nt],
            [nu + 0.1, nb - 0.15],
            [nu + na, nb - 0.04],
            [nu + na * 0.8, nb + 0.03],
            [nu, nb + 0.05],
            [nu - na * 0.8, nb + 0.03],
            [nu - na, nb - 0.04],
            [nu - 0.1, nb - 0.15],
        ]
    )
    reg = c.raster((nose, 1))
    if reg is not None:
        u, v = c.coords(reg)
        side = np.clip(1 - 0.12 * np.sign(yaw + 1e-3) * (u - nu) / na, 0.8, 1.1)
        c.paint(reg, skin * 0.97, shade=side, alpha=0.9)
        c.paint(reg, skin * 1.12, alpha=0.6 * _soft(u, v, nu, nb - 0.06, 0.07, 0.12))
        c.label("nose", reg)
    for sgn in (1, -1):
        c.paint(c.raster((_ellipse(nu + sgn * na * 0.45, nb, 0.055, 0.025, -sgn * 0.3), 1)), skin * 0.35, alpha=0.8)

    # Brows: dark arcs a bit like an eye's lash line — the main eye distractor.
    brow_col = _mix(hair_col, np.array([25, 20, 18.0]), rng.uniform(0.2, 0.8))
    brow_v = rng.uniform(-0.62, -0.5)
    arch, bth = rng.uniform(0.03, 0.1), rng.uniform(0.045, 0.1)
    for sgn, part in ((1, "l_brow"), (-1, "r_brow")):
        bu, bhw = fx(sgn * 0.43), 0.28 * fw(sgn * 0.43) * rng.uniform(0.9, 1.1)
        tt = np.linspace(-1, 1, 20)
        xs = bu + sgn * bhw * tt
        yc = brow_v - arch * (1 - ((tt + 0.3) / 1.3) ** 2) + rng.normal(0, 0.01)
        th = bth * (1 - 0.55 * ((tt + 1) / 2) ** 1.5)
        reg = c.raster((_band(xs, yc - th / 2, yc + th / 2), 1))
        c.paint(reg, brow_col, alpha=rng.uniform(0.75, 0.95), grain=10)
        c.label(part, reg)

    # Eyes.
    eye_v = rng.uniform(-0.3, -0.2)
    closed = rng.random() < 0.08
    wink = (not closed) and rng.random() < 0.02
    hw0, hu0, hl0 = rng.uniform(0.17, 0.23), rng.uniform(0.065, 0.1), rng.uniform(0.04, 0.065)
    iris = _IRIS[rng.integers(0, len(_IRIS))] * rng.uniform(0.8, 1.2)
    gaze = rng.uniform(-0.3, 0.3)
    liner = rng.uniform(0.015, 0.035)
    shadow = rng.uniform(0.1, 0.5) if rng.random() < 0.3 else 0.0
    shadow_col = _mix(skin * 0.5, rng.uniform(20, 200, 3), rng.random() * 0.5)
    eye_geo = {}
    for sgn, part in ((1, "l_eye"), (-1, "r_eye")):
        cu = fx(sgn * rng.uniform(0.38, 0.44))
        hw = hw0 * fw(sgn * 0.42)
        shut = closed or (wink and sgn > 0)
        hu, hl = (rng.uniform(0.008, 0.02), rng.uniform(0.004, 0.01)) if shut else (hu0, hl0)
        cv = eye_v + (0.02 if shut else 0.0)
        xs, up, lo, poly = _almond(cu, cv, hw, hu, hl, sgn * rng.uniform(-0.03, 0.01))
        eye_geo[sgn] = (cu, cv, hw)
        # Socket shadow around the eye (not part of the mask).
        sreg = c.raster((_ellipse(cu, cv - 0.03, hw * 1.5, 0.14), 1))
        if sreg is not None:
            su, sv = c.coords(sreg)
            c.paint(sreg, shadow_col, alpha=(0.12 + shadow) * _soft(su, sv, cu, cv - 0.05, hw * 1.5, 0.14))
        reg = c.raster((poly, 1))
        if reg is None:
            continue
        if shut:
            c.paint(reg, skin * 0.3, alpha=0.9)
        else:
            c.paint(reg, np.array([235, 232, 225]) * rng.uniform(0.85, 1.0), grain=4)
            ir = (hu + hl) * rng.uniform(0.55, 0.7)
            iu, iv = cu + gaze * hw * 0.5, cv - (hu - hl) * 0.3
            ireg = c.raster((_ellipse(iu, iv, ir, ir), 1), within=reg)
            if ireg is not None:
                u, v = c.coords(ireg)
                c.paint(ireg, iris, shade=1 - 0.75 * _soft(u, v, iu, iv, ir * 0.5, ir * 0.5))
                c.paint(
                    ireg,
                    np.array([250, 250, 250.0]),
                    alpha=_soft(u, v, iu + ir * 0.3, iv - ir * 0.3, ir * 0.22, ir * 0.22),
                )
        # Upper lid / lash line, a little outside the opening like real lashes.
        c.paint(
            c.raster(
                (
                    _polyline_band(
                        np.stack([xs, up], 1),
                        np.full(len(xs), liner) * (0.4 + 0.6 * np.sqrt(1 - np.linspace(-1, 1, len(xs)) ** 2)),
                    ),
                    1,
                )
            ),
            np.array([20, 15, 15.0]),
            alpha=0.9,
        )
        c.label(part, reg)

    # Mouth and lips.
    mu = fx(0) + 0.05 * yaw
    mv = rng.uniform(0.55, 0.7)
    mhw = rng.uniform(0.36, 0.48) * fw(0)
    smile = rng.uniform(-0.1, 0.03)
    open_mouth = rng.random() < 0.45
    gap = rng.uniform(0.03, 0.2) if open_mouth else 0.0
    hu, hl = rng.uniform(0.065, 0.12), rng.uniform(0.09, 0.17)
    bow = rng.uniform(0.15, 0.5)
    tt = np.linspace(-1, 1, 31)
    xs = mu + mhw * tt
    curve = mv + smile * tt**2  # smile < 0 lifts the corners (image y points down)
    yi_u = curve - gap / 2 * (1 - tt**2) ** 0.7
    yi_l = curve + gap / 2 * (1 - tt**2) ** 0.7 + (gap * 0.3 * (1 - tt**2) if smile < -0.03 else 0)
    yo_u = yi_u - hu * (1 - tt**2) ** 0.6 * (1 - bow * np.exp(-((tt / 0.15) ** 2)))
    yo_l = yi_l + hl * (1 - tt**2) ** 0.55
    if open_mouth:
        reg = c.raster((_band(xs, yi_u, yi_l), 1))
        if reg is not None:
            c.paint(reg, np.array([70, 15, 25.0]) * rng.uniform(0.6, 1.3), grain=6)
            if rng.random() < 0.65:  # upper teeth
                treg = c.raster((_band(xs, yi_u, yi_u + min(gap * 0.55, 0.07) * (1 - tt**2) ** 0.5), 1))
                c.paint(treg, np.array([238, 232, 215.0]) * rng.uniform(0.8, 1.0), grain=5)
            c.label("mouth", reg)
    if rng.random() < 0.3:  # lipstick
        lip_col = rng.choice(np.array([[190, 30, 45], [150, 20, 60], [210, 80, 100], [120, 40, 40.0]]))
        lip_col = lip_col * rng.uniform(0.8, 1.1)
    else:
        lip_col = _mix(skin, np.array([200, 70, 80.0]), rng.uniform(0.25, 0.6)) * rng.uniform(0.75, 0.95)
    for part, poly, dark in (("u_lip", _band(xs, yo_u, yi_u), 0.85), ("l_lip", _band(xs, yi_l, yo_l), 1.0)):
        reg = c.raster((poly, 1))
        if reg is None:
            continue
        u, v = c.coords(reg)
        hl_shade = dark * (1 + 0.2 * _soft(u, v, mu, mv + gap / 2 + hl * 0.45, mhw * 0.45, hl * 0.4))
        c.paint(reg, lip_col, shade=hl_shade, grain=4)
        c.label(part, reg, cuts=("mouth",))
    if not open_mouth:  # the seam between closed lips
        c.paint(c.raster((_polyline_band(np.stack([xs, yi_u], 1), 0.012), 1)), lip_col * 0.4, alpha=0.8)

    # Glasses over the eyes; sunglasses hide them (the annotations then have no eye files).
    if rng.random() < 0.12:
        sun = rng.random() < 0.2
        frame = _METAL[rng.integers(0, 4)] * rng.uniform(0.3, 1.0)
        fth = rng.uniform(0.02, 0.05)
        ry = rng.uniform(0.15, 0.22)
        lens_tint = rng.uniform(0, 80, 3) if sun else rng.uniform(150, 255, 3)
        for sgn, (cu, cv, hw) in eye_geo.items():
            rx = hw * rng.uniform(1.35, 1.6)
            outer = _ellipse(cu, cv, rx + fth, ry + fth, n=48)
            inner = _ellipse(cu, cv, rx, ry, n=48)
            # squarish lenses
            outer[:, 0] = cu + np.sign(outer[:, 0] - cu) * np.abs(outer[:, 0] - cu) ** 0.9 * (rx + fth) ** 0.1
            freg = c.raster((outer, 1), (inner, 0))
            lreg = c.raster((inner, 1))
            c.paint(lreg, lens_tint, alpha=rng.uniform(0.85, 0.95) if sun else rng.uniform(0.05, 0.2))
            c.paint(freg, frame, grain=5)
            c.label("eye_g", lreg)
            c.label("eye_g", freg)
            if sun:
                c.unlabel("l_eye" if sgn > 0 else "r_eye")
            # temple arm to the ear
            side = cu + sgn * (rx + fth)
            treg = c.raster(
                (_polyline_band(np.array([[side, cv - 0.05], [sgn * 1.02 - 0.5 * yaw, cv - 0.02]]), fth), 1)
            )
            c.paint(treg, frame)
            c.label("eye_g", treg)
        lu, ru = eye_geo[1][0] - eye_geo[1][2] * 1.4, eye_geo[-1][0] + eye_geo[-1][2] * 1.4
        breg = c.raster(
            (_polyline_band(np.array([[ru, eye_v - 0.02], [(lu + ru) / 2, eye_v - 0.06], [lu, eye_v - 0.02]]), fth), 1)
        )
        c.paint(breg, frame)
        c.label("eye_g", breg)

    # --- in front: fringe, a strand over one eye, hat -----------------------------------
    if not bald:
        h0 = rng.uniform(-1.1, -0.6)
        capw = rng.uniform(1.04, 1.2)
        curv = rng.uniform(0.2, 0.8)
        tilt = rng.normal(0, 0.15)
        uu = np.linspace(capw, -capw, 33)
        line = h0 + curv * uu**2 + tilt * uu + 0.03 * np.sin(uu * rng.uniform(8, 20))
        line = np.minimum(line, eye_v - 0.18)  # fringes end above the brows... mostly
        t = np.linspace(np.pi, 2 * np.pi, 24)
        cap = np.stack([capw * np.cos(t), -0.3 + hair_top_ry * 0.92 * np.sin(t)], 1)
        cap += curly * np.sin(t * rng.uniform(10, 30))[:, None]
        poly = np.concatenate([cap, np.stack([uu, line], 1)])
        reg = c.raster((poly, 1))
        if reg is not None:
            u, v = c.coords(reg)
            strands = 1 + 0.15 * _sin(rng.uniform(30, 70) * (u + 0.2 * _sin(2 * v)))
            c.paint(reg, hair_col, shade=strands * (1 + 0.15 * _soft(u, v, 0.2, -1.1, 0.6, 0.3)), grain=6)
            c.label("hair", reg, cuts="all")
        if rng.random() < 0.045:  # a lock of hair over one eye: that eye is (mostly) not visible
            sgn = 1 if rng.random() < 0.5 else -1
            cu, cv, hw = eye_geo[sgn]
            w = hw * rng.uniform(1.0, 1.6)
            off = rng.uniform(-0.05, 0.05)
            lock = np.array(
                [
                    [cu - w * 0.6, -1.3],
                    [cu + w * 0.6, -1.3],
                    [cu + off + w, cv + 0.15],
                    [cu + off, cv + rng.uniform(0.25, 0.5)],
                    [cu + off - w, cv + 0.15],
                ]
            )
            reg = c.raster((lock, 1))
            if reg is not None:
                u, v = c.coords(reg)
                c.paint(reg, hair_col, shade=1 + 0.15 * _sin(40 * (u + 0.3 * v)), grain=6)
                c.label("hair", reg, cuts="all")

    if rng.random() < 0.07:
        col = rng.uniform(10, 245, 3)
        low = rng.random() < 0.35
        brim_v = rng.uniform(-0.35, -0.15) if low else rng.uniform(-0.9, -0.6)
        rot = rng.normal(0, 0.25 if low else 0.1)
        dome = _ellipse(0, brim_v, rng.uniform(1.05, 1.25), rng.uniform(0.8, 1.1), n=48)
        dome = dome[dome[:, 1] <= brim_v + 1e-6]
        brim = np.array([[-1.5, brim_v - 0.1], [1.5, brim_v - 0.1], [1.4, brim_v + 0.12], [-1.4, brim_v + 0.12]])
        cr, sr = math.cos(rot), math.sin(rot)
        rotm = np.array([[cr, -sr], [sr, cr]])
        for poly, sh in ((dome, 1.0), (brim, 0.8)):
            reg = c.raster((poly @ rotm.T, 1))
            c.paint(reg, col * sh, grain=6)
            c.label("hat", reg, cuts="all")

    # --- camera: lighting, blur, noise --------------------------------------------------
    th = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-1, 1, n, dtype=np.float32)
    light = rng.uniform(0.75, 1.2) * (
        1 + rng.uniform(0, 0.3) * (ramp[None, :] * math.cos(th) + ramp[:, None] * math.sin(th))
    )
    img = c.img * light[..., None] * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    im = Image.fromarray(img).filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.1) * n / 512))
    img = np.asarray(im, np.float32) + rng.uniform(1, 5) * rng.standard_normal((n, n, 1), np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)

    masks = {}
    for part in PARTS:
        m = c.masks.get(part)
        if m is None:
            continue
        if mask_size != n:
            m = np.asarray(Image.fromarray(m).resize((mask_size, mask_size), Image.NEAREST))
        if m.any():
            masks[part] = m
    return img, masks


def _encode_sample(
    sample_id: int, *, seed: int, image_size: int, mask_size: int
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Render and encode one sample (in a worker): JPEG bytes and (part, PNG bytes) pairs."""
    rng = np.random.default_rng([seed, sample_id])
    img, masks = render_face(rng, image_size, mask_size)
    buf = io.BytesIO()
    # Every encoder setting spelled out (Pillow's defaults), so a Pillow release that changes a default
    # cannot change the bytes; the encoders themselves (libjpeg-turbo 3.1.2 in Pillow 12.0.0, 3.2.0 in
    # 13.0.0; the system's zlib) gave identical bytes.
    Image.fromarray(img).save(
        buf, "JPEG", quality=int(rng.integers(75, 91)), subsampling="4:2:0", optimize=False, progressive=False
    )
    pngs = []
    for part, m in masks.items():
        pbuf = io.BytesIO()
        Image.fromarray(m.astype(np.uint8) * 255, "L").save(pbuf, "PNG", compress_level=6, optimize=False)
        pngs.append((part, pbuf.getvalue()))
    return buf.getvalue(), pngs


def _zinfo(name: str, is_dir: bool = False) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(f"{ZIP_ROOT}/{name}", date_time=_ZIP_DATE)
    zi.compress_type = zipfile.ZIP_STORED  # JPEG/PNG are already compressed
    zi.create_system = 3  # otherwise platform-dependent
    zi.external_attr = ((0o40755 << 16) | 0x10) if is_dir else (0o100644 << 16)
    return zi


def generate_sample(
    out_zip: Path, n: int, seed: int, image_size: int = 512, mask_size: int = 512, n_jobs: int = 1
) -> None:
    """ids 0..n-1; sample id i drawn from np.random.default_rng([seed, i]) so the result is
    byte-identical for any n_jobs. Workers render and encode; this process writes the zip in id
    order (ZIP_STORED, fixed timestamps). Written atomically: no half zip after an interruption."""
    work = functools.partial(_encode_sample, seed=seed, image_size=image_size, mask_size=mask_size)
    with atomic_path(out_zip) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for d in ("", f"{IMAGE_DIR}/", f"{MASK_DIR}/"):
            zf.writestr(_zinfo(d, True), b"")
        for sample_id, (jpg, pngs) in map_samples(
            work, range(n), on_error="fail", skipped={}, n_jobs=n_jobs, desc="synthetic"
        ):
            if sample_id % MASKS_PER_FOLDER == 0:
                zf.writestr(_zinfo(f"{MASK_DIR}/{sample_id // MASKS_PER_FOLDER}/", True), b"")
            zf.writestr(_zinfo(image_relpath(sample_id)), jpg)
            for part, png in pngs:
                zf.writestr(_zinfo(mask_relpath(sample_id, part)), png)
