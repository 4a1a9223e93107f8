"""Built-in data: generated shape/digit/colour images and two bundled out-of-distribution sets.

Generated images (in the spirit of the study's ColorShapeDigit800k data)
-------------------------------------------------------------------------
Every image shows one of 8 shapes (`SHAPES`) filled with one of 10 colours (`COLORS`),
carrying one of 10 digits (`DIGITS`) drawn on the shape from a built-in 5x7 bitmap font
(blocky printed glyphs, nothing like MNIST's handwriting), in black or white by the
shape colour's luminance, with a 1-pixel outline in the opposite ink so that it stays
legible where it overhangs the shape. The three attributes are drawn uniformly and
independently per image; position, size (radius 30-42% of the side), rotation (any angle)
of the shape, size/offset/tilt of the digit (tilt at most 15 degrees, so 6 and 9 stay
apart), the background (dark, light, or a smooth grey noise texture, each with a gradient
and a faint tint) and uniform pixel noise (standard deviation 2-12 of 255) vary per image.
`digit_only` and `shape_only` (the study's `digit` and `shape` probes) draw the same way
with the shape layer, resp. the digit layer, left out.

Rendering is vectorised numpy: every shape and glyph is a precomputed signed-distance
table; one batch of images looks its pixels up through per-image rotated, scaled
coordinates and turns distance into a one-pixel anti-aliased coverage.

Determinism: images come in fixed blocks of `_BLOCK`; block `k` of a (seed, stream) draws
from its own numpy Generator seeded with SeedSequence(seed, spawn_key=(stream, k)),
with separate generators for attributes, textures and pixel noise. Image `i` therefore
depends only on (seed, stream, i, size): the same seed gives byte-identical arrays
whatever `n` is (`generate(m)` is the first `m` images of `generate(n)`, m <= n) and
however the work is chunked. The attributes of image `i` do not depend on `size` either.
`split` ("train", "val", "test") selects an independent stream, so that a test set is
never a copy of a training set made with the same seed. The ColorShapeDigit folder tree
of these images (write and read) is `repr_sim.data.shapetree`.

Labels
------
`label` keeps some attributes: "shape", "digit", "color", "shape_digit", "shape_color",
"digit_color" or "all" (= shape_digit_color). As in the study (docs/protocol.md section 2), the
label of an image is the index of the kept attributes' joined name in sorted order:
the names are "<shape>_<digit>_<color>" restricted to the kept attributes, joined with "_"
in the order shape, digit, colour, for every combination, sorted as strings
(`label_names(label)`). `SHAPES` and `COLORS` are themselves sorted, no name is a prefix of
another and all names are lowercase, so the string order equals the attribute-index
order: label("all") = 100 * shape + 10 * digit + color (an implementation fact the
tests check; the code always goes through the sorted names).

Out-of-distribution probe sets (no rendering code involved)
-----------------------------------------------------------
`sklearn_digits`: scikit-learn's bundled 8x8 handwritten digits (1797), 0..16 scaled to
0..255, bilinearly upscaled, grey in three channels. `sample_patches`: random square crops
of scikit-learn's two bundled photos (china.jpg, flower.jpg), resized with PIL.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

SHAPES = ("circle", "cross", "diamond", "heart", "ring", "square", "star", "triangle")
DIGITS = tuple(range(10))
COLORS = (
    "blue", "brown", "cyan", "green", "magenta", "orange", "pink", "purple", "red", "yellow",
)  # fmt: skip
# Saturated, well separated in RGB (and from the greyish backgrounds).
PALETTE = {
    "blue": (30, 70, 240),
    "brown": (130, 70, 20),
    "cyan": (0, 220, 230),
    "green": (20, 170, 40),
    "magenta": (225, 0, 225),
    "orange": (255, 140, 0),
    "pink": (255, 120, 185),
    "purple": (120, 30, 190),
    "red": (215, 15, 15),
    "yellow": (250, 230, 0),
}
ATTRIBUTES = {"shape": SHAPES, "digit": DIGITS, "color": COLORS}
LABELS = ("shape", "digit", "color", "shape_digit", "shape_color", "digit_color", "all")
SPLITS = ("train", "val", "test")

_BLOCK = 512  # images per seeded block (fixes the random streams: never change it)
# Stream ids of the SeedSequence spawn keys: one per (kind of image, split).
_STREAMS = {
    ("full", "train"): 0,
    ("full", "val"): 1,
    ("full", "test"): 2,
    ("digit_only", "test"): 3,
    ("shape_only", "test"): 4,
}
_PARAMS, _TEXTURE, _NOISE = 0, 1, 2  # sub-streams of one block
_BATCH_PIXELS = 65536  # pixels composed at once (a speed knob: images do not depend on it)
_TEXTURE_GRID = 5  # the noise texture is a smooth upsampling of a 5x5 random grid

# --------------------------------------------------------------------------- labels


def label_attributes(label: str) -> tuple[str, ...]:
    """The attributes a label set keeps, in name order (shape, digit, color)."""
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(LABELS)}")
    return tuple(ATTRIBUTES) if label == "all" else tuple(label.split("_"))


@functools.cache
def _label_table(label: str) -> tuple[tuple[str, ...], np.ndarray]:
    """(sorted names, rank of each combination in mixed-radix attribute-index order)."""
    kept = label_attributes(label)
    combos = itertools.product(*(ATTRIBUTES[a] for a in kept))
    names = ["_".join(str(v) for v in combo) for combo in combos]
    order = sorted(range(len(names)), key=names.__getitem__)
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    return tuple(names[i] for i in order), rank


def label_names(label: str) -> list[str]:
    """Class names of a label set; the label of a class is its index in this sorted list."""
    return list(_label_table(label)[0])


def num_classes(label: str) -> int:
    return len(_label_table(label)[0])


def label_from_attrs(attrs: dict, label: str) -> np.ndarray:
    """Labels (int64) of images with attribute indices `attrs` under a label set."""
    kept = label_attributes(label)
    codes = []
    for name in kept:
        if name not in attrs:
            raise ValueError(f"attrs lack {name!r} (label {label!r} needs {', '.join(kept)})")
        values = np.asarray(attrs[name], dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() >= len(ATTRIBUTES[name])):
            raise ValueError(f"attrs[{name!r}] out of range 0..{len(ATTRIBUTES[name]) - 1}")
        codes.append(values)
    dims = tuple(len(ATTRIBUTES[a]) for a in kept)
    return _label_table(label)[1][np.ravel_multi_index(tuple(codes), dims)]


def class_name(shape: int, digit: int, color: int) -> str:
    """The ColorShapeDigit folder name of one class, e.g. circle_7_blue."""
    return f"{SHAPES[shape]}_{DIGITS[digit]}_{COLORS[color]}"


def parse_class_name(name: str) -> tuple[int, int, int]:
    """(shape, digit, color) indices of a folder name; ValueError if it is not one."""
    parts = name.split("_")
    ok = (
        len(parts) == 3
        and parts[0] in SHAPES
        and parts[1] in {str(d) for d in DIGITS}
        and parts[2] in COLORS
    )
    if not ok:
        raise ValueError(
            f"unknown class folder {name!r}: expected <shape>_<digit>_<color> with shape in "
            f"{'/'.join(SHAPES)}, digit 0-9, color in {'/'.join(COLORS)}"
        )
    return SHAPES.index(parts[0]), int(parts[1]), COLORS.index(parts[2])


# ------------------------------------------------------------------ distance tables

_SHAPE_HALF = 1.25  # shape tables cover [-1.25, 1.25]^2 in units of the shape radius
_GLYPH_PAD = 2  # glyph tables: the 5x7 cell grid plus 2 cells of margin on every side
_RADIUS = (0.30, 0.42)  # shape radius, fraction of the image side
_CELL = (0.13, 0.16)  # glyph cell, fraction of the shape radius


def _table_res(size: int) -> tuple[int, int]:
    """Table samples per shape unit and per glyph cell for images of `size` pixels.

    Nearest-sample lookups are accurate to half a sample; at most half a pixel at the
    largest shape and glyph keeps the one-pixel anti-aliasing smooth, and smaller tables
    stay in the CPU cache (the lookups are the costliest part of rendering).
    """
    largest_radius = _RADIUS[1] * size
    shape_res = max(16, int(np.ceil(2 * largest_radius)))
    glyph_res = max(6, int(np.ceil(2 * _CELL[1] * largest_radius)))
    return shape_res, glyph_res


_FONT = {  # 5x7 bitmap font, drawn for this project
    0: (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    1: ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    2: (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    3: ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    4: ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    5: ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    6: ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    7: ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    8: (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    9: (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
}


def _signed_distance(mask: np.ndarray, res: float) -> np.ndarray:
    """Signed distance (negative inside) of a sampled mask, in units of 1/res."""
    from scipy.ndimage import distance_transform_edt

    outside = distance_transform_edt(~mask) - 0.5  # the edge lies between samples
    inside = distance_transform_edt(mask) - 0.5
    return (np.where(mask, -inside, outside) / res).astype(np.float32)


def _shape_mask(name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inside test of a shape of radius ~1 centred at 0 (y points down, as in images)."""
    radius = np.hypot(x, y)
    if name == "circle":
        return radius <= 0.9
    if name == "ring":
        return (radius <= 0.98) & (radius >= 0.6)
    if name == "square":
        return (np.abs(x) <= 0.7) & (np.abs(y) <= 0.7)
    if name == "diamond":  # a rhombus 0.6 wide, 1 tall: no rotation makes it a square
        return np.abs(x) / 0.6 + np.abs(y) / 1.0 <= 1.0
    if name == "cross":
        arm, half = 0.3, 0.95
        return ((np.abs(x) <= arm) & (np.abs(y) <= half)) | (
            (np.abs(y) <= arm) & (np.abs(x) <= half)
        )
    if name in ("triangle", "star"):
        sides = 3 if name == "triangle" else 5
        # Slightly larger than the radius: corners are thin, their mass is near the centre.
        return _polygon_mask(x / 1.08, y / 1.08, sides, None if name == "triangle" else 0.45)
    if name == "heart":  # the classic implicit heart, scaled and centred
        u, v = x / 0.85, -(y / 0.85) + 0.15
        return (u * u + v * v - 1.0) ** 3 - u * u * v**3 <= 0.0
    raise AssertionError(name)


def _polygon_mask(x, y, points: int, inner: float | None) -> np.ndarray:
    """A regular polygon (inner=None) or star of circumradius 1 pointing up."""
    angles = -np.pi / 2 + 2 * np.pi * np.arange(points) / points
    outer = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if inner is None:
        verts = outer
    else:  # alternate outer and inner vertices
        mid = angles + np.pi / points
        inner_v = inner * np.stack([np.cos(mid), np.sin(mid)], axis=1)
        verts = np.empty((2 * points, 2))
        verts[0::2], verts[1::2] = outer, inner_v
    return _inside_polygon(x, y, verts)


def _inside_polygon(x, y, verts: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon test for arrays of points."""
    inside = np.zeros(x.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(verts, np.roll(verts, -1, axis=0), strict=True):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_at)
    return inside


@functools.cache
def _shape_tables(res: int) -> np.ndarray:
    """[8, T, T] signed distance of every shape, in units of the shape radius."""
    side = int(round(2 * _SHAPE_HALF * res))
    centres = (np.arange(side) + 0.5) / res - _SHAPE_HALF
    y, x = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([_signed_distance(_shape_mask(s, x, y), res) for s in SHAPES])


@functools.cache
def _glyph_tables(res: int) -> np.ndarray:
    """[10, H, W] signed distance of every digit glyph, in units of one glyph cell."""
    tables = []
    for digit in DIGITS:
        cells = np.array([[c == "#" for c in row] for row in _FONT[digit]])
        cells = np.pad(cells, _GLYPH_PAD)
        mask = np.repeat(np.repeat(cells, res, axis=0), res, axis=1)
        tables.append(_signed_distance(mask, res))
    return np.stack(tables)


def _lookup(tables, which, cx, cy, scale, angle, half_w, half_h, res, xs, ys) -> np.ndarray:
    """Nearest-sample table values at every pixel of every image, shape [m, P].

    Pixel (x, y) maps to table coordinates R(-angle) (p - c) / scale, shifted so the
    object's centre sits at (half_w, half_h); the affine map is folded into one
    multiply-add per axis.
    """
    _, h, w = tables.shape
    cos, sin = np.cos(angle), np.sin(angle)
    k = (res / scale).astype(np.float32)
    col = _affine(cos * k, sin * k, half_w * res - k * (cos * cx + sin * cy) + 0.5, xs, ys)
    row = _affine(-sin * k, cos * k, half_h * res - k * (-sin * cx + cos * cy) + 0.5, xs, ys)
    np.clip(col, 0, w - 1, out=col)
    np.clip(row, 0, h - 1, out=row)
    index = row.astype(np.int32)
    index *= w
    index += col.astype(np.int32)
    index += (which.astype(np.int32) * (h * w))[:, None]
    return tables.reshape(-1)[index]


def _affine(a, b, c, xs, ys) -> np.ndarray:
    """a*x + b*y + c for per-image coefficients [m] and pixel coordinates [P] -> [m, P]."""
    out = np.multiply(a.astype(np.float32)[:, None], xs[None, :])
    out += b.astype(np.float32)[:, None] * ys[None, :]
    out += c.astype(np.float32)[:, None]
    return out


def _coverage(distance_px: np.ndarray, grow: float = 0.0) -> np.ndarray:
    """One-pixel anti-aliased coverage of {distance <= grow}, in place."""
    np.subtract(0.5 + grow, distance_px, out=distance_px)
    return np.clip(distance_px, 0.0, 1.0, out=distance_px)


# --------------------------------------------------------------------- rendering


def _generator(seed: int, stream: int, block: int, sub: int) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream, block, sub)))
    )


def _draw_params(rng: np.random.Generator) -> dict:
    """Every per-image random choice of one block (always _BLOCK images, fixed order)."""
    n = _BLOCK
    u = rng.random
    p = {
        "shape": rng.integers(0, len(SHAPES), n),
        "digit": rng.integers(0, len(DIGITS), n),
        "color": rng.integers(0, len(COLORS), n),
        "radius": _RADIUS[0] + (_RADIUS[1] - _RADIUS[0]) * u(n),  # fraction of the side
        "angle": 2 * np.pi * u(n),
        "digit_cell": _CELL[0] + (_CELL[1] - _CELL[0]) * u(n),  # fraction of the radius
        "digit_angle": np.deg2rad(30 * u(n) - 15),
        "digit_dx": 0.2 * u(n) - 0.1,  # offset from the shape centre, fraction of radius
        "digit_dy": 0.2 * u(n) - 0.1,
        "bg_kind": rng.integers(0, 3, n),  # 0 dark, 1 light, 2 noise texture
        "bg_level": u(n),
        "bg_tint": 24 * u((n, 3)) - 12,
        "grad_amp": 30 * u(n),
        "grad_angle": 2 * np.pi * u(n),
        "tex_amp": 35 + 45 * u(n),
        "noise_sigma": 2 + 10 * u(n),
    }
    # The centre keeps the shape (radius up to ~1 in shape units) inside the frame.
    r = p["radius"]
    p["cx"] = r + (1 - 2 * r) * u(n)
    p["cy"] = r + (1 - 2 * r) * u(n)
    return p


@functools.cache
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.arange(size, dtype=np.float32) + 0.5
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return xs.ravel(), ys.ravel()


@functools.cache
def _upsample_matrix(src: int, dst: int) -> np.ndarray:
    """[dst, src] linear interpolation weights (pixel centres aligned, edges clamped)."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    frac = pos - lo
    m = np.zeros((dst, src))
    m[np.arange(dst), lo] += 1 - frac
    m[np.arange(dst), hi] += frac
    return m


def _background_grey(p: dict, texture: np.ndarray, size: int) -> np.ndarray:
    """[m, P] float32 grey level of the backgrounds: dark, light or textured, with gradient.

    The per-channel tint is added by the caller, so that all planes share this work.
    """
    kind = p["bg_kind"]
    level = np.select(
        [kind == 0, kind == 1], [10 + 50 * p["bg_level"], 180 + 55 * p["bg_level"]],
        70 + 110 * p["bg_level"],
    )  # fmt: skip
    xs, ys = _pixel_grid(size)
    a = p["grad_amp"] * np.cos(p["grad_angle"]) / size
    b = p["grad_amp"] * np.sin(p["grad_angle"]) / size
    grey = _affine(a, b, level - (a + b) * size / 2, xs, ys)
    up = _upsample_matrix(_TEXTURE_GRID, size).astype(np.float32)
    smooth = (up @ texture @ up.T).reshape(len(kind), -1)
    smooth *= np.where(kind == 2, p["tex_amp"], 0.0).astype(np.float32)[:, None]
    grey += smooth
    return grey


def _noise_bytes(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform int8 noise (-128..127) from raw random bits.

    Raw 64-bit draws cut into signed bytes are several times faster than numpy's normal
    or float samplers, and the stream is sequential (a longer draw extends a shorter one).
    The bytes are read little-endian, as every platform numpy supports here does.
    """
    count = int(np.prod(shape))
    return rng.bit_generator.random_raw(-(-count // 8)).view(np.int8)[:count].reshape(shape)


def _layer_weights(shape_alpha, outline_alpha, ink_alpha, ink):
    """Fold the layers into final = (background)*A + colour*B + G, all [m, P].

    Shape over background: bg*(1-s) + colour*s. The digit is grey (ink and outline are
    black or white), so outline then ink over that is v*(1-o)*(1-i) + G with
    G = o*(1-i)*(255-ink) + i*ink; one weight per pixel serves all three channels.
    """
    if outline_alpha is None:
        keep, grey = 1.0, 0.0
    else:
        keep = (1.0 - outline_alpha) * (1.0 - ink_alpha)
        outline = (255.0 - ink).astype(np.float32)[:, None]
        grey = outline_alpha * (1.0 - ink_alpha) * outline
        grey += ink_alpha * ink.astype(np.float32)[:, None]
    if shape_alpha is None:
        return keep, None, grey
    return (1.0 - shape_alpha) * keep, shape_alpha * keep, grey


def _render_block(seed, stream, block, count, size, draw_shape, draw_digit):
    """The first `count` images of one block: (uint8 [count, size, size, 3], attrs)."""
    p = {k: v[:count] for k, v in _draw_params(_generator(seed, stream, block, _PARAMS)).items()}
    texture = _generator(seed, stream, block, _TEXTURE).random(
        (count, _TEXTURE_GRID, _TEXTURE_GRID), dtype=np.float32
    )
    texture = 2 * texture - 1
    noise = _noise_bytes(_generator(seed, stream, block, _NOISE), (count, 3, size * size))
    images = np.empty((count, size * size, 3), dtype=np.uint8)
    # Compose in small batches: the dozen [m, P] temporaries then stay in the CPU cache.
    batch = max(1, _BATCH_PIXELS // (size * size))
    for lo in range(0, count, batch):
        part = slice(lo, min(count, lo + batch))
        sub = {k: v[part] for k, v in p.items()}
        images[part] = _compose(sub, texture[part], noise[part], size, draw_shape, draw_digit)
    attrs = {k: p[k].astype(np.int64) for k in ATTRIBUTES}
    return images.reshape(count, size, size, 3), attrs


def _compose(p, texture, noise, size, draw_shape, draw_digit) -> np.ndarray:
    """uint8 [m, P, 3] images from their parameters, texture grids and noise bytes [m, 3, P]."""
    count = len(texture)
    xs, ys = _pixel_grid(size)
    rgb = np.array([PALETTE[c] for c in COLORS], dtype=np.float32)[p["color"]]
    radius = p["radius"] * size
    cx, cy = p["cx"] * size, p["cy"] * size
    shape_alpha = outline_alpha = ink_alpha = ink = None
    shape_res, glyph_res = _table_res(size)
    if draw_shape:
        dist = _lookup(
            _shape_tables(shape_res), p["shape"], cx, cy, radius, p["angle"],
            _SHAPE_HALF, _SHAPE_HALF, shape_res, xs, ys,
        )  # fmt: skip
        dist *= radius.astype(np.float32)[:, None]
        shape_alpha = _coverage(dist)
    if draw_digit:
        cell = p["digit_cell"] * radius
        dist = _lookup(
            _glyph_tables(glyph_res), p["digit"], cx + p["digit_dx"] * radius,
            cy + p["digit_dy"] * radius, cell, p["digit_angle"],
            2.5 + _GLYPH_PAD, 3.5 + _GLYPH_PAD, glyph_res, xs, ys,
        )  # fmt: skip
        dist *= cell.astype(np.float32)[:, None]
        outline_alpha = _coverage(dist.copy(), max(1.0, size / 32))
        ink_alpha = _coverage(dist)
        # Black ink on light colours, white on dark; the outline is the other one.
        ink = np.where(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32) > 140, 0, 255)
    keep, colour, grey = _layer_weights(shape_alpha, outline_alpha, ink_alpha, ink)
    # Noise of standard deviation sigma from bytes b: (b + 0.5) * sigma * sqrt(12) / 256.
    step = (p["noise_sigma"] * np.sqrt(12.0) / 256.0).astype(np.float32)[:, None]
    base = _background_grey(p, texture, size)
    base *= keep
    base += grey
    base += 0.5 + 0.5 * step  # + 0.5: the truncating cast below then rounds
    tint = p["bg_tint"].astype(np.float32)
    images = np.empty((count, size * size, 3), dtype=np.uint8)
    for c in range(3):
        plane = noise[:, c].astype(np.float32)
        plane *= step
        plane += base
        plane += tint[:, c, None] * keep
        if colour is not None:
            plane += rgb[:, c, None] * colour
        np.clip(plane, 0, 255, out=plane)
        np.copyto(images[:, :, c], plane, casting="unsafe")
    return images


def _render(start, stop, *, size, seed, stream, draw_shape=True, draw_digit=True):
    """Images start..stop-1 of a stream: (uint8 [stop-start, size, size, 3], attrs)."""
    images = np.empty((stop - start, size, size, 3), dtype=np.uint8)
    attrs = {k: np.empty(stop - start, dtype=np.int64) for k in ATTRIBUTES}
    pos = start
    while pos < stop:
        block, offset = divmod(pos, _BLOCK)
        count = min(_BLOCK, offset + stop - pos)
        imgs, att = _render_block(seed, stream, block, count, size, draw_shape, draw_digit)
        take = slice(pos - start, pos - start + count - offset)
        images[take] = imgs[offset:]
        for k in ATTRIBUTES:
            attrs[k][take] = att[k][offset:]
        pos += count - offset
    return images, attrs


def render_split(start: int, stop: int, *, size: int, seed: int, split: str):
    """Images start..stop-1 of a split's stream: (uint8 [stop-start, size, size, 3], attrs).

    The same images as `generate(stop, split=split)[start:stop]`, for writers that render
    a long stream in chunks (repr_sim.data.shapetree).
    """
    return _render(start, stop, size=size, seed=seed, stream=_STREAMS["full", split])


def check_args(n: int, size: int, seed: int) -> None:
    """ValueError unless n >= 0, size >= 8 and seed >= 0 are integers."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def generate(n: int, *, size: int = 32, seed: int = 0, label: str = "shape", split: str = "train"):
    """`n` generated images: (uint8 [n, size, size, 3], int64 labels [n], attrs).

    attrs maps 'shape', 'digit', 'color' to int64 indices into SHAPES, DIGITS, COLORS;
    the labels are `label_from_attrs(attrs, label)`. `split` picks an independent stream
    (train, val or test) for the same seed.
    """
    check_args(n, size, seed)
    label_attributes(label)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    images, attrs = _render(0, n, size=size, seed=seed, stream=_STREAMS["full", split])
    return images, label_from_attrs(attrs, label), attrs


def digit_only(n: int, *, size: int = 32, seed: int = 0):
    """The study's `digit` probe: images with a digit and no shape; labels = the digit.

    The digit is drawn exactly as in `generate` (same size, position, ink and outline
    distribution) on the same backgrounds, only the shape layer is left out.
    """
    check_args(n, size, seed)
    images, attrs = _render(
        0, n, size=size, seed=seed, stream=_STREAMS["digit_only", "test"], draw_shape=False
    )
    return images, attrs["digit"]


def shape_only(n: int, *, size: int = 32, seed: int = 0):
    """The study's `shape` probe: images with a shape and no digit; labels = the shape."""
    check_args(n, size, seed)
    images, attrs = _render(
        0, n, size=size, seed=seed, stream=_STREAMS["shape_only", "test"], draw_digit=False
    )
    return images, attrs["shape"]


# ------------------------------------------------------------------ bundled OOD sets


def _resize_grey(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of [N, h, w] float images to [N, size, size]."""
    rows = _upsample_matrix(images.shape[1], size)
    cols = _upsample_matrix(images.shape[2], size)
    return rows @ images @ cols.T


def sklearn_digits(*, size: int = 32):
    """scikit-learn's 1797 bundled 8x8 digits: (uint8 [1797, size, size, 3], int64 digits)."""
    from sklearn.datasets import load_digits

    check_args(0, size, 0)
    bunch = load_digits()
    grey = _resize_grey(bunch.images * (255.0 / 16.0), size)
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=3), bunch.target.astype(np.int64)


@functools.cache
def _sample_photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(np.asarray(im, dtype=np.uint8) for im in load_sample_images().images)


def sample_patches(n: int, *, size: int = 32, seed: int = 0):
    """`n` random square crops of scikit-learn's two bundled photos, resized to size.

    Crop side uniform in [size, 200] (capped by the photo), position uniform, photo
    uniform; resized with PIL's anti-aliased bilinear filter. Labels are zeros.
    """
    from PIL import Image

    check_args(n, size, seed)
    photos = _sample_photos()
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(99,))))
    which = rng.integers(0, len(photos), n)
    u = rng.random((n, 3))
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        photo = photos[which[i]]
        h, w = photo.shape[:2]
        hi = min(200, h, w)
        side = min(size, hi) + int(u[i, 0] * (hi - min(size, hi) + 1))
        top, left = int(u[i, 1] * (h - side + 1)), int(u[i, 2] * (w - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        out[i] = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR))
    return out, np.zeros(n, dtype=np.int64)
