"""The `avatars` dataset: cartoon faces from PyPI `python_avatars`, rasterised by `resvg_py`.

Attributes are drawn per image from `random.Random(f"avatars-{seed}-{index}")`, so image i is the
same whatever n is and however the work is split between processes. Only parts that python_avatars
really draws for the chosen top are used (e.g. a beard needs a top with a facial-hair slot), so the
captions never mention something that is not in the picture.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

from ldmkit.data.builtin.card import BuildResult, Record, image_name, package_version
from ldmkit.errors import DataError

# hair style value -> phrase ({c}: hair colour). All of these have facial-hair and accessory slots.
HAIR = {
    "no_hair": "a bald head", "big_hair": "big {c} hair", "bob": "a {c} bob", "bun": "{c} hair in a bun",
    "buzzcut": "a {c} buzzcut", "caesar": "a short {c} caesar cut", "cornrows": "{c} cornrows",
    "curly": "long {c} curly hair", "dreadlocks": "long {c} dreadlocks", "fro": "a {c} afro",
    "frizzle": "frizzy {c} hair", "long_not_too_long": "long straight {c} hair", "mohawk": "a {c} mohawk",
    "pixie": "a {c} pixie cut", "pompadour": "a {c} pompadour", "shaggy": "shaggy {c} hair",
    "short_curly": "short {c} curly hair", "short_flat": "short {c} hair", "short_waved": "short wavy {c} hair",
    "braids": "{c} braids", "bride": "long {c} hair with a bridal veil", "mia_wallace": "a {c} bob with bangs",
}
# hat value -> phrase ({c}: hat colour)
HATS = {"hat": "a {c} hat", "winter_hat_1": "a {c} winter hat", "winter_hat_2": "a {c} bobble hat", "turban": "a {c} turban"}
HAIR_COLORS = {"auburn": "auburn", "black": "black", "blonde": "blonde", "blonde_golden": "golden blonde",
               "brown": "brown", "brown_dark": "dark brown", "pastel_pink": "pastel pink", "platinum": "platinum",
               "red": "red", "silver_gray": "silver gray"}
SKINS = {"tanned": "tanned", "yellow": "yellow", "pale": "pale", "light": "light", "brown": "brown",
         "dark_brown": "dark brown", "black": "very dark"}
EYES = {"default": "", "closed": "eyes closed", "cry": "crying", "eye_roll": "rolling eyes", "happy": "happy eyes",
        "heart": "heart-shaped eyes", "side": "looking to the side", "squint": "squinting", "surprised": "wide eyes",
        "wink": "winking", "wink_wacky": "winking wackily", "x_dizzy": "dizzy x eyes"}
EYEBROWS = {"default": "", "default_natural": "", "angry": "angry eyebrows", "angry_natural": "angry eyebrows",
            "flat_natural": "flat eyebrows", "frown_natural": "frowning eyebrows", "raised_excited": "raised eyebrows",
            "raised_excited_natural": "raised eyebrows", "sad_concerned": "worried eyebrows",
            "sad_concerned_natural": "worried eyebrows", "unibrow_natural": "a unibrow",
            "up_down": "one raised eyebrow", "up_down_natural": "one raised eyebrow"}
MOUTHS = {"default": "with a neutral expression", "smile": "smiling", "big_smile": "grinning", "concerned": "looking concerned",
          "disbelief": "with an open mouth", "eating": "eating", "grimace": "grimacing", "sad": "looking sad",
          "scream_open": "screaming", "serious": "looking serious", "tongue": "sticking out the tongue",
          "twinkle": "with a slight smile"}
FACIAL_HAIR = {"none": "", "beard_light": "a light {c} beard", "beard_medium": "a {c} beard",
               "beard_magestic": "a big {c} beard", "moustache_fancy": "a fancy {c} moustache",
               "moustache_magnum": "a thick {c} moustache"}
ACCESSORIES = {"none": "", "eyepatch": "an eyepatch", "kurt": "white sunglasses", "prescription_01": "glasses",
               "prescription_02": "thin glasses", "round": "round glasses", "sunglasses": "sunglasses",
               "wayfarers": "wayfarer sunglasses"}
OPAQUE = frozenset({"kurt", "sunglasses", "wayfarers"})
"""Accessories that hide the eyes: captions then do not describe the eyes (the label keeps them)."""
CLOTHES = {"blazer_shirt": "a dark blazer over a {c} shirt", "blazer_sweater": "a dark blazer over a {c} sweater",
           "collar_sweater": "a {c} collared sweater", "graphic_shirt": "a {c} graphic t-shirt",
           "hoodie": "a {c} hoodie", "overall": "{c} overalls", "shirt_crew_neck": "a {c} crew-neck t-shirt",
           "shirt_scoop_neck": "a {c} scoop-neck t-shirt", "shirt_v_neck": "a {c} v-neck t-shirt"}
CLOTHING_COLORS = {"black": "black", "blue_01": "light blue", "blue_02": "blue", "blue_03": "dark blue",
                   "gray_01": "light gray", "gray_02": "gray", "heather": "dark gray", "pastel_blue": "pastel blue",
                   "pastel_green": "pastel green", "pastel_orange": "pastel orange", "pastel_yellow": "pastel yellow",
                   "pink": "pink", "red": "red", "white": "white"}
BACKGROUNDS = {"white": "#ffffff", "light blue": "#9fd3f5", "pink": "#f6c1d1", "yellow": "#f7e08a",
               "light green": "#b9e4b0", "lavender": "#d3c6f0", "gray": "#b8b8b8", "orange": "#f5b982"}
TEMPLATES = (
    "a person with {hair}, {extras}, {mouth}",
    "cartoon avatar of a person with {skin} skin and {hair}, wearing {clothing}, {mouth}, on a {background} background",
    "a cartoon face: {skin} skin, {hair}, {extras}, {mouth}",
)
PARALLEL_MIN = 200
"""Below this many images the pool's start-up costs more than it saves."""


def check_sources() -> None:
    """Raise a DataError naming the packages to install when python_avatars or resvg_py is missing."""
    try:
        import python_avatars  # noqa: F401
        import resvg_py  # noqa: F401
    except ImportError as exc:
        raise DataError(f"the avatars dataset needs python_avatars and resvg_py ({exc}): pip install 'ldmkit[data]'") from None


def random_attributes(rng: random.Random) -> dict[str, str]:
    """One avatar's attributes as label strings (keys of the phrase tables above)."""
    top_is_hat = rng.random() < 0.15
    return {
        "top": rng.choice(sorted(HATS) if top_is_hat else sorted(HAIR)),
        "hair_color": rng.choice(sorted(HAIR_COLORS)),
        "hat_color": rng.choice(sorted(CLOTHING_COLORS)) if top_is_hat else "none",
        "skin": rng.choice(sorted(SKINS)),
        "eyes": rng.choice(sorted(EYES)),
        "eyebrows": rng.choice(sorted(EYEBROWS)),
        "mouth": rng.choice(sorted(MOUTHS)),
        "facial_hair": rng.choice(sorted(FACIAL_HAIR)) if rng.random() < 0.35 else "none",
        "accessory": rng.choice(sorted(ACCESSORIES)) if rng.random() < 0.4 else "none",
        "clothing": rng.choice(sorted(CLOTHES)),
        "clothing_color": rng.choice(sorted(CLOTHING_COLORS)),
        "background": rng.choice(sorted(BACKGROUNDS)),
    }


def captions_for(labels: dict[str, str]) -> tuple[str, ...]:
    """Three plain-English phrasings built from the labels only."""
    hair_c = HAIR_COLORS[labels["hair_color"]]
    if labels["top"] in HATS:
        hair = HATS[labels["top"]].format(c=CLOTHING_COLORS[labels["hat_color"]])
    else:
        hair = HAIR[labels["top"]].format(c=hair_c)
    extras = [p for p in (
        ACCESSORIES[labels["accessory"]],
        FACIAL_HAIR[labels["facial_hair"]].format(c=hair_c),
        "" if labels["accessory"] in OPAQUE else EYES[labels["eyes"]],
        EYEBROWS[labels["eyebrows"]],
    ) if p]
    extras_text = _join(extras) if extras else "no glasses"
    clothing = CLOTHES[labels["clothing"]].format(c=CLOTHING_COLORS[labels["clothing_color"]])
    mouth = MOUTHS[labels["mouth"]]
    fields = dict(hair=hair, extras=extras_text, mouth=mouth, skin=SKINS[labels["skin"]], clothing=clothing,
                  background=labels["background"])
    return tuple(t.format(**fields) for t in TEMPLATES)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def render_avatar(labels: dict[str, str], size: int):
    """The avatar as an RGB PIL image: the 264x280 drawing centred on a square of the background colour."""
    import io

    import python_avatars as pa
    from PIL import Image
    import resvg_py

    is_hat = labels["top"] in HATS
    avatar = pa.Avatar(
        style=pa.AvatarStyle.TRANSPARENT,
        top=pa.HatType(labels["top"]) if is_hat else pa.HairType(labels["top"]),
        hat_color=pa.ClothingColor[labels["hat_color"].upper()] if is_hat else pa.ClothingColor.HEATHER,
        hair_color=pa.HairColor[labels["hair_color"].upper()],
        facial_hair_color=pa.HairColor[labels["hair_color"].upper()],
        skin_color=pa.SkinColor[labels["skin"].upper()],
        eyes=pa.EyeType(labels["eyes"]),
        eyebrows=pa.EyebrowType(labels["eyebrows"]),
        mouth=pa.MouthType(labels["mouth"]),
        facial_hair=pa.FacialHairType.NONE if labels["facial_hair"] == "none" else pa.FacialHairType(labels["facial_hair"]),
        accessory=pa.AccessoryType.NONE if labels["accessory"] == "none" else pa.AccessoryType(labels["accessory"]),
        clothing=pa.ClothingType(labels["clothing"]),
        clothing_color=pa.ClothingColor[labels["clothing_color"].upper()],
        shirt_graphic=pa.ClothingGraphic.SKULL,
    )
    svg = avatar.render()
    # square viewBox 280x280 with the 264-wide drawing centred: the face is not stretched
    svg = svg.replace('width="264px" height="280px" viewBox="0 0 264 280"', 'width="280px" height="280px" viewBox="-8 0 280 280"', 1)
    png = bytes(resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size, background=BACKGROUNDS[labels["background"]]))
    with Image.open(io.BytesIO(png)) as img:
        return img.convert("RGB")


def _render_range(args: tuple[str, int, int, int, int]) -> list[tuple[str, dict[str, str]]]:
    """Worker: render images start..stop-1 into out; returns (file name, labels) per image."""
    out, seed, size, start, stop = args
    done = []
    for index in range(start, stop):
        labels = random_attributes(random.Random(f"avatars-{seed}-{index}"))
        name = image_name(index)
        render_avatar(labels, size).save(Path(out, name))
        done.append((name, labels))
    return done


def build(out: Path, *, n: int | None, seed: int, size: int) -> BuildResult:
    """Write n (default 2,000) avatars into out/images, in two processes when that pays off."""
    import os

    check_sources()
    count = 2000 if n is None else n
    workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
    chunks = max(1, workers * 4 if count >= PARALLEL_MIN and workers > 1 else 1)
    bounds = [(str(out), seed, size, count * i // chunks, count * (i + 1) // chunks) for i in range(chunks)]
    if chunks == 1:
        results = [_render_range(bounds[0])]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: the parent may hold torch threads, which fork does not copy safely
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_render_range, bounds))
    records = [Record(name, captions_for(labels), labels) for part in results for name, labels in part]
    return BuildResult(
        name="avatars",
        records=tuple(records),
        sources={"python_avatars": package_version("python_avatars"), "resvg_py": package_version("resvg_py")},
        licenses={"python_avatars": "MIT (artwork: Avataaars by Pablo Stanley, free for personal and commercial use)",
                  "resvg_py": "MIT / Apache-2.0 (resvg)"},
        templates=TEMPLATES,
        notes=(
            "attributes are uniform over the tables in ldmkit/data/builtin/avatars.py; 15% hats, "
            "35% facial hair, 40% accessories; facial hair has the hair colour",
            "hair_color is the colour of hair and facial hair; under a hat the hair is hidden",
            "graphic t-shirts always carry the same skull print",
        ),
    )


def avatar_values() -> dict[str, tuple[str, ...]]:
    """Every value of every `avatars` label column, from the phrase tables above."""
    tables = {"top": (*HAIR, *HATS), "hair_color": HAIR_COLORS, "hat_color": ("none", *CLOTHING_COLORS),
              "skin": SKINS, "eyes": EYES, "eyebrows": EYEBROWS, "mouth": MOUTHS,
              "facial_hair": FACIAL_HAIR, "accessory": ACCESSORIES, "clothing": CLOTHES,
              "clothing_color": CLOTHING_COLORS, "background": BACKGROUNDS}
    return {column: tuple(sorted(values)) for column, values in tables.items()}


def is_avatars_row(labels: Mapping[str, str]) -> bool:
    """Whether labels hold a valid value for every `avatars` column (an avatars row, also inside a mixture)."""
    return all(labels.get(column) in values for column, values in avatar_values().items())


def avatars_value_sets(labels: Mapping[str, str], template: int | None = None) -> dict[str, frozenset[str]]:
    """Column -> the values v for which the captions of (labels with column = v) are the same as those of
    labels: all three captions, or only caption number `template`. A value the captions cannot tell apart
    is in the set; a column the captions never show (the eyes behind sunglasses) gets every value."""

    def captions(values: Mapping[str, str]) -> tuple[str, ...] | str | None:
        try:
            texts = captions_for(dict(values))
        except KeyError:  # an impossible combination (a hat without a hat colour) says something else
            return None
        return texts if template is None else texts[template]

    own = captions(labels)
    return {column: frozenset(v for v in values if v == labels[column] or captions({**labels, column: v}) == own)
            for column, values in avatar_values().items()}
