"""Free phrasings of `avatars` labels: prompts written the way people write them (issue 17).

    rng = random.Random("free-avatars-images/00012.png")
    p = free_phrasing(labels, rng, pool="eval")     # p.text "draw me someone with ginger hair and a big grin"
    p.asked                                         # {"hair_color": {"red"}, "mouth": {"big_smile"}}

The builder's captions (avatars.TEMPLATES) always name the same attributes in the same order with one word
per value. A phrasing here names 1-4 attributes, in a random order, in one of several sentence shapes,
with synonyms ("ginger" for red hair, "navy" for dark blue). Each word lists every label value it can mean
("blond" allows blonde and golden blonde; "sunglasses" allows all three kinds), and `asked` keeps those
sets, so a scorer counts an image right when it shows any value the words allow.

Two disjoint pools: "train" phrasings are what the builder adds to captions when asked (`phrasings=K`),
"eval" phrasings are the held-out prompt set of `ldmkit eval --prompt-set free-avatars`. They share only
the plain colour and style words of the training templates; sentence shapes, subjects and synonyms differ,
so the eval set stays held out from a model trained on the train pool.

With `words="all"` the builder's phrasings draw their words from both pools (every synonym here: what a model
for users should know), while sentence shapes, subjects and colour-only phrases stay the train pool's. The
free-avatars eval of such a model then holds out sentence shapes, subjects, attribute subsets and images, not
words (`ldmkit.evaluation.phrasing_vocabulary` counts every eval word as trained).

A third pool, "new", is never added to captions by any option: hair and clothing colour words in neither pool
("raven", "russet", "cobalt", "periwinkle"), in the eval pool's sentence shapes and subjects. It is the prompt set
`free-avatars-new-words`: how a model draws colour words it was never taught, whatever `words` it was trained on.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ldmkit.data.builtin.avatars import HATS, OPAQUE
from ldmkit.errors import UsageError

POOLS = ("train", "eval", "new")
WORDS = ("train", "all")
"""Which words the builder's phrasings draw: the train pool's, or both pools' (see the module docstring)."""

# A word table: pool ("both", "train", "eval") -> {phrase: "value, value, ..." (the label values it allows)}.
# Phrases with {c} take a colour word ("a {c}mohawk" -> "a ginger mohawk"; "a mohawk" without colour).
HAIR_STYLE = {
    "both": {"a {c}bob": "bob, mia_wallace", "a {c}mohawk": "mohawk", "{c}cornrows": "cornrows",
             "a {c}pompadour": "pompadour",
             "frizzy {c}hair": "frizzle", "{c}dreadlocks": "dreadlocks", "{c}braids": "braids"},
    "train": {"a bald head": "no_hair", "voluminous {c}hair": "big_hair", "{c}hair tied in a bun": "bun",
              "a {c}buzz cut": "buzzcut", "a {c}caesar haircut": "caesar", "long {c}curls": "curly",
              "a {c}afro": "fro", "straight shoulder-length {c}hair": "long_not_too_long", "a short {c}pixie": "pixie",
              "messy {c}hair": "shaggy", "short {c}curls": "short_curly", "short straight {c}hair": "short_flat",
              "short {c}waves": "short_waved", "a wedding veil over {c}hair": "bride",
              "a {c}bob with a fringe": "mia_wallace"},
    "eval": {"no hair at all": "no_hair", "huge {c}hair": "big_hair", "a {c}hair bun": "bun",
             "buzzed {c}hair": "buzzcut", "a short {c}caesar cut": "caesar", "long curly {c}hair": "curly",
             "a big {c}afro": "fro", "long {c}hair": "long_not_too_long, bride", "a {c}pixie haircut": "pixie",
             "shaggy {c}hair": "shaggy", "short curly {c}hair": "short_curly", "short {c}hair": "short_flat, caesar",
             "short wavy {c}hair": "short_waved", "a bridal veil": "bride", "a {c}bob with bangs": "mia_wallace"},
}
HAIR_COLOR = {
    "both": {"black": "black", "red": "red", "auburn": "auburn", "brown": "brown, brown_dark",
             "dark brown": "brown_dark", "platinum": "platinum", "blond": "blonde, blonde_golden"},
    "train": {"copper": "red", "jet-black": "black", "silver": "silver_gray", "chestnut": "brown",
              "golden": "blonde_golden", "pale blond": "blonde", "pastel pink": "pastel_pink",
              "reddish-brown": "auburn", "white-blond": "platinum"},
    "eval": {"ginger": "red", "grey": "silver_gray", "gray": "silver_gray", "honey-blond": "blonde_golden",
             "brunette": "brown, brown_dark", "pink": "pastel_pink", "bright blond": "blonde",
             "platinum blond": "platinum", "chestnut-brown": "brown"},
    "new": {"raven": "black", "fiery red": "red", "russet": "auburn", "mousy brown": "brown",
            "espresso": "brown_dark", "icy blond": "platinum", "sandy": "blonde", "caramel blond": "blonde_golden",
            "salt-and-pepper": "silver_gray", "steel-grey": "silver_gray", "bubblegum pink": "pastel_pink"},
}
HAT = {
    "both": {"a {c}turban": "turban"},
    "train": {"a {c}brimmed hat": "hat", "a {c}knit cap": "winter_hat_1, winter_hat_2",
              "a {c}pom-pom hat": "winter_hat_2"},
    "eval": {"a {c}hat": "hat", "a {c}beanie": "winter_hat_1, winter_hat_2", "a {c}bobble hat": "winter_hat_2",
             "a {c}head wrap": "turban"},
}
CLOTH_COLOR = {
    "both": {"black": "black", "red": "red", "white": "white", "pink": "pink", "light blue": "blue_01",
             "dark blue": "blue_03", "pastel green": "pastel_green", "light gray": "gray_01"},
    "train": {"royal blue": "blue_02", "sky blue": "blue_01", "midnight blue": "blue_03", "slate gray": "gray_02",
              "dark grey": "heather", "powder blue": "pastel_blue", "pale green": "pastel_green",
              "peach": "pastel_orange", "pale yellow": "pastel_yellow", "scarlet": "red", "snow-white": "white"},
    "eval": {"navy": "blue_03", "baby blue": "blue_01", "blue": "blue_01, blue_02, blue_03", "grey": "gray_02",
             "charcoal": "heather", "pastel blue": "pastel_blue", "mint": "pastel_green",
             "pastel orange": "pastel_orange", "butter yellow": "pastel_yellow", "light grey": "gray_01",
             "hot pink": "pink", "jet black": "black"},
    "new": {"onyx": "black", "crimson": "red", "ivory": "white", "fuchsia": "pink", "cornflower blue": "blue_01",
            "cobalt": "blue_02", "indigo": "blue_03", "dove grey": "gray_01", "stone grey": "gray_02",
            "graphite": "heather", "periwinkle": "pastel_blue", "sage": "pastel_green", "apricot": "pastel_orange",
            "lemon": "pastel_yellow"},
}
CLOTHES = {
    "both": {"a {c}hoodie": "hoodie", "{c}overalls": "overall"},
    "train": {"a {c}shirt under a blazer": "blazer_shirt", "a {c}jumper under a blazer": "blazer_sweater",
              "a {c}sweater with a collar": "collar_sweater", "a {c}tee with a skull print": "graphic_shirt",
              "a {c}crew-neck tee": "shirt_crew_neck", "a {c}scoop-neck top": "shirt_scoop_neck",
              "a {c}v-neck tee": "shirt_v_neck", "a {c}hooded top": "hoodie"},
    "eval": {"a suit jacket and a {c}shirt": "blazer_shirt", "a blazer over a {c}sweater": "blazer_sweater",
             "a {c}collared jumper": "collar_sweater", "a {c}skull t-shirt": "graphic_shirt",
             "a {c}t-shirt": "shirt_crew_neck, shirt_scoop_neck, shirt_v_neck, graphic_shirt",
             "a {c}v-neck": "shirt_v_neck", "{c}dungarees": "overall", "a {c}hooded sweatshirt": "hoodie"},
}
CLOTH_ONLY = {"train": ("{c} clothes", "a {c} outfit"), "eval": ("a {c} top", "{c} clothing"),
              "new": ("a {c} top", "{c} clothing")}
"""A clothing colour named without the kind of garment."""
HAIR_ONLY = {"train": ("{c} hair",), "eval": ("{c} hair",), "new": ("{c} hair",)}
SKIN = {
    "both": {"pale skin": "pale", "light skin": "light", "brown skin": "brown", "dark brown skin": "dark_brown",
             "yellow skin": "yellow", "tanned skin": "tanned"},
    "train": {"a suntan": "tanned", "very dark skin": "black", "deep brown skin": "dark_brown, black"},
    "eval": {"tan skin": "tanned", "fair skin": "pale, light", "dark skin": "dark_brown, black",
             "ebony skin": "black", "simpsons-yellow skin": "yellow"},
}
MOUTH = {
    "both": {"a big grin": "big_smile"},
    "train": {"a calm expression": "default", "a smile": "smile, twinkle", "a worried mouth": "concerned",
              "a gaping mouth": "disbelief", "food in the mouth": "eating", "gritted teeth": "grimace",
              "a sad frown": "sad", "a wide-open screaming mouth": "scream_open", "a stern mouth": "serious",
              "the tongue sticking out": "tongue", "a faint smile": "twinkle"},
    "eval": {"a straight face": "default, serious", "a happy smile": "smile", "a huge grin": "big_smile",
             "a worried look": "concerned", "an open mouth": "disbelief, scream_open", "a mouth full of food": "eating",
             "a grimace": "grimace", "a sad face": "sad", "a scream": "scream_open",
             "a serious face": "serious, default",
             "their tongue out": "tongue", "a little smile": "twinkle, smile"},
}
EYES = {
    "both": {"heart eyes": "heart"},
    "train": {"shut eyes": "closed", "tears": "cry", "eyes rolled up": "eye_roll", "smiling eyes": "happy",
              "eyes glancing aside": "side", "narrowed eyes": "squint", "startled eyes": "surprised",
              "one eye winking": "wink", "a goofy wink": "wink_wacky", "x-shaped eyes": "x_dizzy"},
    "eval": {"closed eyes": "closed", "tears running down": "cry", "rolled eyes": "eye_roll",
             "happy eyes": "happy", "a sideways glance": "side", "squinty eyes": "squint",
             "wide-open eyes": "surprised", "a wink": "wink, wink_wacky", "dizzy eyes": "x_dizzy"},
}
FACIAL_HAIR = {
    "both": {"a thick moustache": "moustache_magnum"},
    "train": {"stubble": "beard_light", "a full beard": "beard_medium", "a long bushy beard": "beard_magestic",
              "a curly moustache": "moustache_fancy", "facial hair": "beard_light, beard_medium, beard_magestic, "
                                                                     "moustache_fancy, moustache_magnum"},
    "eval": {"a short beard": "beard_light", "a beard": "beard_light, beard_medium, beard_magestic",
             "a huge beard": "beard_magestic", "a handlebar mustache": "moustache_fancy",
             "a mustache": "moustache_fancy, moustache_magnum"},
}
ACCESSORY = {
    "both": {"round glasses": "round"},
    "train": {"a patch over one eye": "eyepatch", "white shades": "kurt",
              "spectacles": "prescription_01, prescription_02, round", "dark sunglasses": "sunglasses, wayfarers, kurt",
              "wayfarers": "wayfarers", "wire glasses": "prescription_02"},
    "eval": {"an eye patch": "eyepatch", "white sunglasses": "kurt",
             "glasses": "prescription_01, prescription_02, round",
             "sunglasses": "sunglasses, wayfarers, kurt", "shades": "sunglasses, wayfarers, kurt",
             "specs": "prescription_01, prescription_02, round"},
}
BACKGROUND = {
    "both": {"white": "white", "pink": "pink", "yellow": "yellow", "orange": "orange", "lavender": "lavender"},
    "train": {"sky-blue": "light blue", "pale green": "light green", "grey": "gray"},
    "eval": {"light blue": "light blue", "mint green": "light green", "gray": "gray", "lilac": "lavender"},
}
SUBJECTS = {"train": ("a person", "a character", "an avatar of someone", "a cartoon person", "a guy", "a woman",
                      "a man", "a girl", "a kid", "a cartoon figure", "a young person", "a human face"),
            "eval": ("someone", "a cartoon character", "a cute avatar", "a friendly face", "a little person")}
FRAMES = {  # {s}: subject, {a}: attributes with "with"/"wearing", {l}: a bare list of the attribute phrases
    "train": ("illustration of {s} {a}", "{l}, cartoon avatar", "{s} {a}, flat cartoon style",
              "avatar image: {s} {a}", "a portrait of {s} {a}", "{l}, person", "portrait, {l}", "cartoon, {l}",
              "show {s} {a}", "an image of {s} {a}", "generate {s} {a}", "{s} {a}, simple drawing",
              "can I have {s} {a}?"),
    "eval": ("{s} {a}", "draw me {s} {a}", "{l}", "profile pic: {l}", "could you make {s} {a}?",
             "a drawing of {s} {a}, please", "I'd like {s} {a}"),
}
SUBJECTS["new"], FRAMES["new"] = SUBJECTS["eval"], FRAMES["eval"]  # the new pool differs from the eval pool in words
NEW_COLUMNS = frozenset({"hair_color", "clothing_color"})
"""What the "new" pool can name (its words are colours of hair and clothes)."""
MAX_ATTRIBUTES = 4
MAX_PHRASINGS = 16
"""Upper bound of the builder's `phrasings` (free phrasings added per image)."""
BACKGROUND_CHANCE = 0.1
"""A phrasing names the background this rarely (people seldom ask for one)."""


@dataclass(frozen=True)
class Phrasing:
    """One free phrasing of an avatar and what it asks for."""

    text: str
    """The prompt."""
    asked: dict[str, frozenset[str]]
    """Label column -> every value the words allow (the avatar's own value is always among them)."""
    words: dict[str, str]
    """Label column -> the table phrase that names it ("ginger", "a {c}mohawk"): which synonyms fail."""

    def __post_init__(self) -> None:
        if not self.text or not self.asked or len(self.asked) > MAX_ATTRIBUTES or set(self.words) != set(self.asked):
            raise UsageError(f"a phrasing names 1-{MAX_ATTRIBUTES} attributes and has text; got {self!r}")


def free_phrasing(labels: Mapping[str, str], rng: random.Random, *, pool: str,
                  columns: Collection[str] | None = None, words: str = "train") -> Phrasing:
    """A phrasing of `labels` (an avatars row) naming 1-4 of its visible attributes, drawn with `rng` from
    the word tables of `pool`; `columns` limits which label columns may be named (None: any). A train-pool
    phrasing with words="all" draws its words from both pools (frames and subjects stay the train pool's); a
    "new"-pool phrasing names only NEW_COLUMNS, in words of no other pool."""
    if pool not in POOLS:
        raise UsageError(f"phrasing pool must be one of {POOLS}, got {pool!r}")
    check_phrasing_words(words)
    if words == "all" and pool != "train":
        raise UsageError("words='all' applies to train-pool phrasings (the eval pool's words are its own)")
    parts = ("both", "train", "eval") if words == "all" else ("new",) if pool == "new" else ("both", pool)
    if pool == "new":  # only its colour words: no other attribute has a word no pool has
        columns = NEW_COLUMNS & set(labels if columns is None else columns)
    slots = _slots(labels, pool, parts, rng, columns)
    if not slots:
        raise UsageError(f"nothing nameable in {dict(labels)} within columns {sorted(columns or ())}")
    rng.shuffle(slots)
    budget = rng.randint(1, MAX_ATTRIBUTES)
    chosen, asked = [], {}
    for slot in slots:
        phrase, slot_asked = slot(budget - len(asked))
        if phrase is not None:
            chosen.append(phrase)
            asked.update(slot_asked)
        if len(asked) >= budget:
            break
    return Phrasing(_sentence(chosen, pool, rng), {k: v for k, (_, v) in asked.items()},
                    {k: word for k, (word, _) in asked.items()})


def check_phrasings(phrasings) -> None:
    """UsageError unless phrasings is an integer in [0, MAX_PHRASINGS]."""
    if isinstance(phrasings, bool) or not isinstance(phrasings, int) or not 0 <= phrasings <= MAX_PHRASINGS:
        raise UsageError(f"avatars phrasings must be an integer in [0, {MAX_PHRASINGS}], got {phrasings!r}")


def check_phrasing_words(words, *, prefix: str = "") -> None:
    """UsageError unless words is one of WORDS."""
    if words not in WORDS:
        raise UsageError(f"{prefix}phrasing_words must be one of {', '.join(WORDS)}, got {words!r}")


def with_phrasings(result, seed: int, count: int, *, colours: bool = False, words: str = "train"):
    """The avatars BuildResult with `count` train-pool phrasings added to each record's captions; record i's
    come from its own generator (seeded by build seed and i), so they are the same whatever n is. A draw that
    repeats one of the record's captions is drawn again (a repeat would be a `duplicate_line` in the build).
    colours: keep only draws that name every colour the avatar shows (`colours_shown`); words: "all" draws
    the words of both pools (`free_phrasing`)."""
    from dataclasses import replace

    from ldmkit.data.builtin.card import Record

    check_phrasings(count)
    records = []
    for index, record in enumerate(result.records):
        rng = random.Random(f"avatars-phrasings-{seed}-{index}")
        extra = record_phrasings(record.labels, record.captions, rng, count, colours=colours, words=words)
        records.append(Record(record.file_name, record.captions + tuple(extra), record.labels))
    note = (f"each image also has {count} free phrasings after the template captions (1-4 attributes, synonyms, "
            "varied word order; ldmkit/data/builtin/avatar_phrasings.py, train pool)"
            + ("; each names every colour the avatar shows" if colours else "")
            + ("; words from both pools (the eval pool's synonyms too)" if words == "all" else ""))
    return replace(result, records=tuple(records), notes=(*result.notes, note))


COLOUR_TRIES = 400
"""Draws per phrasing when every shown colour must be named (about one train-pool draw in 16 names them all:
6.1% of 10,000 draws for the first 500 avatars of emoji+avatars --n avatars=6000)."""


def record_phrasings(labels: Mapping[str, str], captions: Collection[str], rng: random.Random, count: int, *,
                     colours: bool = False, words: str = "train") -> list[str]:
    """Up to `count` distinct train-pool phrasings of `labels` not among `captions` (fewer when the bounded
    draws run out); with `colours`, only phrasings that name every colour shown; `words` as in free_phrasing."""
    need = colours_shown(labels) if colours else set()
    extra: list[str] = []
    for _ in range((COLOUR_TRIES if colours else 10) * count):
        if len(extra) == count:
            break
        phrasing = free_phrasing(labels, rng, pool="train", words=words)
        if need <= phrasing.asked.keys() and phrasing.text not in captions and phrasing.text not in extra:
            extra.append(phrasing.text)
    return extra


def colours_shown(labels: Mapping[str, str]) -> set[str]:
    """The colour columns an avatar shows: its clothing's, and its hat's or (unless bald) its hair's."""
    if labels["top"] in HATS:
        return {"hat_color", "clothing_color"}
    return {"clothing_color"} | ({"hair_color"} if labels["top"] != "no_hair" else set())


def _slots(labels: Mapping[str, str], pool: str, parts: tuple[str, ...], rng: random.Random, columns) -> list:
    """Closures slot(room) -> ((role, phrase), {column: (word, values)}) or (None, {}): one per nameable feature."""
    allowed = set(labels) if columns is None else set(columns)
    if labels["top"] in HATS:
        slots = [_pair(("top", HAT), ("hat_color", CLOTH_COLOR), None, "wearing", labels, pool, parts, rng, allowed)]
    else:
        slots = [_pair(("top", HAIR_STYLE), ("hair_color", HAIR_COLOR), HAIR_ONLY, "with", labels, pool, parts, rng,
                       allowed)]
    slots.append(_pair(("clothing", CLOTHES), ("clothing_color", CLOTH_COLOR), CLOTH_ONLY, "wearing", labels, pool,
                       parts, rng, allowed))
    singles = [("skin", SKIN, "with"), ("mouth", MOUTH, "with")]
    if labels["accessory"] != "none":
        singles.append(("accessory", ACCESSORY, "wearing"))
    if labels["facial_hair"] != "none":
        singles.append(("facial_hair", FACIAL_HAIR, "with"))
    if labels["eyes"] != "default" and labels["accessory"] not in OPAQUE:
        singles.append(("eyes", EYES, "with"))
    if rng.random() < BACKGROUND_CHANCE:
        singles.append(("background", BACKGROUND, "on"))
    slots += [_single(column, table, role, labels, parts, rng) for column, table, role in singles if column in allowed]
    return [s for s in slots if s is not None]


def _pair(kind: tuple[str, dict], colour: tuple[str, dict], only: dict | None, role: str, labels, pool: str,
          parts: tuple[str, ...], rng: random.Random, allowed: set):
    """A feature with a kind and a colour (hair style + hair colour, garment + its colour): names the kind,
    the colour (when `only` has colour-only phrases) or both (when room allows two attributes)."""
    (kind_col, kinds), (colour_col, colours) = kind, colour
    kind_ok = kind_col in allowed
    colour_ok = colour_col in allowed and labels[kind_col] != "no_hair"  # a bald head shows no hair colour

    def slot(room):
        options = (["kind"] if kind_ok else []) + (["colour"] if colour_ok and only is not None else [])
        options += ["both"] if kind_ok and colour_ok and room >= 2 else []
        if not options:
            return None, {}
        how = rng.choice(options)
        asked, word = {}, ""
        if how != "kind":
            word, values = _pick(colours, parts, labels[colour_col], rng)
            asked[colour_col] = word, values
        if how == "colour":
            return (role, rng.choice(only[pool]).format(c=word)), asked
        text, values = _pick(kinds, parts, labels[kind_col], rng)
        asked[kind_col] = text, values
        if "{c}" not in text:  # "a bridal veil": the colour word has no place
            asked.pop(colour_col, None)
        return (role, text.format(c=word + " " if word else "")), asked
    return slot if kind_ok or colour_ok else None


def _single(column: str, table: dict, role: str, labels, parts: tuple[str, ...], rng: random.Random):
    def slot(room):
        text, values = _pick(table, parts, labels[column], rng)
        return (role, text), {column: (text, values)}
    return slot


def _pick(table: dict, parts: tuple[str, ...], value: str, rng: random.Random) -> tuple[str, frozenset[str]]:
    """A phrase of the table's `parts` ("both", "train", "eval", "new") that allows `value`, and every value it
    allows."""
    words = [(text, frozenset(values.split(", "))) for part in parts for text, values in table.get(part, {}).items()
             if value in values.split(", ")]
    if not words:
        raise UsageError(f"no {'/'.join(parts)} word for label value {value!r}")
    return rng.choice(words)


def _sentence(chosen: list[tuple[str, str]], pool: str, rng: random.Random) -> str:
    """Join the (role, phrase) pieces in their (shuffled) order into one of the pool's sentence shapes."""
    frame = rng.choice(FRAMES[pool])
    background = [p for role, p in chosen if role == "on"]
    pieces = [(role, p) for role, p in chosen if role != "on"]
    bare = [p for _, p in pieces] + [f"{p} background" for p in background]
    groups = []
    for role in dict.fromkeys(role for role, _ in pieces):
        groups.append(f"{role} " + _join([p for r, p in pieces if r == role]))
    with_text = ", ".join(groups) + "".join(f" on a {p} background" for p in background)
    text = frame.format(s=rng.choice(SUBJECTS[pool]), a=with_text.strip(), l=", ".join(bare))
    return re.sub(r"\ba (?=[aeiou])", "an ", text).replace("  ", " ")


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
