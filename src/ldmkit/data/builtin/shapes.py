"""The `shapes` dataset: procedural scenes of one or two coloured shapes with exact captions.

Every attribute of a scene is a label, and `shapes_reader.read_shapes` reads them back from pixels,
so generated images can be scored. The generator keeps every attribute far from its decision
boundary (positions at grid centres, two well separated sizes, a gap between shapes) so reading is
unambiguous on real images.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ldmkit import __version__
from ldmkit.data.builtin.card import BuildResult, Record, article, image_name, package_version

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
BORDER_TRIM = False
"""Training's framing default for this data (ldmkit.data.builtin.single.border_trim): no border trim, since the
captions name sizes and positions on the backdrop, and trimming the backdrop would zoom in on the shape."""
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (245, 215, 20),
    "purple": (150, 50, 200),
    "orange": (250, 130, 10),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
SIZES: dict[str, float] = {"small": 0.22, "large": 0.40}
"""Bounding-box side of a shape as a fraction of the image side."""
GRID = {"left": 0.25, "centre": 0.5, "right": 0.75}
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.25, 0.25), "top": (0.5, 0.25), "top right": (0.75, 0.25),
    "left": (0.25, 0.5), "centre": (0.5, 0.5), "right": (0.75, 0.5),
    "bottom left": (0.25, 0.75), "bottom": (0.5, 0.75), "bottom right": (0.75, 0.75),
}
POSITION_PHRASES = {
    "top left": "in the top left corner", "top": "at the top", "top right": "in the top right corner",
    "left": "on the left", "centre": "in the centre", "right": "on the right",
    "bottom left": "in the bottom left corner", "bottom": "at the bottom", "bottom right": "in the bottom right corner",
}
RELATIONS = {"above": "below", "left of": "right of"}
"""Canonical relation (first shape is the upper / left one) -> its converse."""
RELATION_PHRASES = {"above": "above", "below": "below", "left of": "to the left of", "right of": "to the right of"}
NONE = "none"
SUPERSAMPLE = 4
JITTER = 0.03

TEMPLATES = (
    "a {size} {color} {shape} {position}",
    "a {size} {color} {shape} {position}, {background} background",
    "{article} {color} {shape}, {size}, {position}",
    "a {size} {color} {shape} {relation} a {size2} {color2} {shape2}",
    "a {size2} {color2} {shape2} {converse} a {size} {color} {shape}",
    "a {size} {color} {shape} {relation} a {size2} {color2} {shape2}, {background} background",
)


@dataclass(frozen=True)
class Scene:
    """The exact content of one shapes image (coordinates are fractions of the image side)."""

    background: str
    """Key of BACKGROUNDS."""
    items: tuple[tuple[str, str, str, float, float], ...]
    """(shape, colour, size, centre x, centre y) for each shape, canonical order (upper / left first)."""
    position: str
    """Key of POSITIONS for a one-shape scene, NONE for two shapes."""
    relation: str
    """'above' or 'left of' for two shapes, NONE for one."""

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background {self.background!r} not in {sorted(BACKGROUNDS)}")
        if len(self.items) not in (1, 2):
            raise ValueError(f"a scene holds one or two shapes, got {len(self.items)}")
        for shape, color, size, x, y in self.items:
            if shape not in SHAPES or color not in COLORS or size not in SIZES or not (0 < x < 1 and 0 < y < 1):
                raise ValueError(f"bad shape item {(shape, color, size, x, y)!r}")
        if (len(self.items) == 1) != (self.relation == NONE) or (len(self.items) == 1) == (self.position == NONE):
            raise ValueError("one shape needs a position and no relation; two shapes a relation and no position")

    def labels(self) -> dict[str, str]:
        """Every attribute as a plain string (the dataset's label columns)."""
        first = self.items[0]
        second = self.items[1] if len(self.items) == 2 else (NONE, NONE, NONE, 0.0, 0.0)
        return {
            "count": str(len(self.items)),
            "shape": first[0], "color": first[1], "size": first[2], "position": self.position,
            "shape2": second[0], "color2": second[1], "size2": second[2], "relation": self.relation,
            "background": self.background,
        }


def captions_for(labels: dict[str, str]) -> tuple[str, ...]:
    """The exact captions of a scene, built from its labels only (so captions always match labels)."""
    fields = dict(labels, article=article(labels["color"]))
    if labels["count"] == "1":
        fields["position"] = POSITION_PHRASES[labels["position"]]
        return tuple(t.format(**fields) for t in TEMPLATES[:3])
    fields["converse"] = RELATION_PHRASES[RELATIONS[labels["relation"]]]
    fields["relation"] = RELATION_PHRASES[labels["relation"]]
    return tuple(t.format(**fields) for t in TEMPLATES[3:])


def random_scene(rng: random.Random) -> Scene:
    """Draw one scene; every choice is uniform, positions are jittered grid centres."""
    background = rng.choice(sorted(BACKGROUNDS))

    def jitter(v: float) -> float:
        return v + rng.uniform(-JITTER, JITTER)

    def pick() -> tuple[str, str, str]:
        return rng.choice(SHAPES), rng.choice(sorted(COLORS)), rng.choice(sorted(SIZES))

    if rng.random() < 0.5:
        position = rng.choice(sorted(POSITIONS))
        x, y = POSITIONS[position]
        return Scene(background, ((*pick(), jitter(x), jitter(y)),), position, NONE)
    relation = rng.choice(sorted(RELATIONS))
    along = (jitter(0.25), jitter(0.75))  # the separated axis: shapes never touch (0.40 + gap < 0.5)
    across = (rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7))
    if relation == "above":
        coords = ((across[0], along[0]), (across[1], along[1]))
    else:
        coords = ((along[0], across[0]), (along[1], across[1]))
    items = tuple((*pick(), cx, cy) for cx, cy in coords)
    return Scene(background, items, NONE, relation)


def shape_polygon(shape: str, cx: float, cy: float, d: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape whose bounding box is the d x d square centred at (cx, cy)."""
    h = d / 2
    if shape == "square":
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        return [(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)]
    if shape == "cross":
        a = d / 6  # arm half-width: arms are a third of the box wide
        return [(cx - a, cy - h), (cx + a, cy - h), (cx + a, cy - a), (cx + h, cy - a), (cx + h, cy + a),
                (cx + a, cy + a), (cx + a, cy + h), (cx - a, cy + h), (cx - a, cy + a), (cx - h, cy + a),
                (cx - h, cy - a), (cx - a, cy - a)]
    raise ValueError(f"unknown polygon shape {shape!r}; allowed: {SHAPES}")


def draw_shape(draw, shape: str, cx: float, cy: float, d: float, fill) -> None:
    """Draw one filled shape (bounding box d x d at centre cx, cy, pixel units) on a PIL ImageDraw."""
    if shape == "circle":
        draw.ellipse([cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2], fill=fill)
    else:
        draw.polygon(shape_polygon(shape, cx, cy, d), fill=fill)


def render_scene(scene: Scene, size: int):
    """The scene as an RGB PIL image of size x size, antialiased by supersampling."""
    from PIL import Image, ImageDraw

    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    for shape, color, size_name, x, y in scene.items:
        draw_shape(draw, shape, x * big, y * big, SIZES[size_name] * big, COLORS[color])
    return img.resize((size, size), Image.Resampling.BOX)


def build(out: Path, *, n: int | None, seed: int, size: int) -> BuildResult:
    """Write n (default 2,000) shapes images into out/images and return their records."""
    if size < 16:
        from ldmkit.errors import UsageError

        raise UsageError(f"shapes needs size >= 16 px to draw readable shapes, got {size}")
    count = 2000 if n is None else n
    records = []
    for index in range(count):
        scene = random_scene(random.Random(f"shapes-{seed}-{index}"))
        name = image_name(index)
        render_scene(scene, size).save(out / name, optimize=False)
        labels = scene.labels()
        records.append(Record(name, captions_for(labels), labels))
    return BuildResult(
        name="shapes",
        records=tuple(records),
        sources={"ldmkit": __version__, "Pillow": package_version("Pillow")},
        licenses={"ldmkit": "Apache-2.0 (procedural images, no third-party content)", "Pillow": "MIT-CMU"},
        templates=TEMPLATES,
        notes=(
            f"shapes: {', '.join(SHAPES)}; colours: {', '.join(f'{k} {v}' for k, v in COLORS.items())}; "
            f"backgrounds: {', '.join(BACKGROUNDS)}; sizes (box side / image side): {SIZES}",
            "two-shape scenes store the upper (relation 'above') or left (relation 'left of') shape first",
            "ldmkit.data.builtin.shapes_reader.read_shapes(img) reads these labels back from an image",
        ),
    )

