"""The `emoji` dataset: Noto Color Emoji glyphs on white, named by the PyPI `emoji` package.

Names and aliases come from `emoji.EMOJI_DATA` (CLDR short names: "smiling face with sunglasses",
"woman pilot: light skin tone"). Unicode's group/subgroup are not shipped by any installed package,
so the `group` label is guessed from the name by keywords (the card says so). Pillow draws the
colour bitmap font only at size 109 with `embedded_color=True`; glyphs are drawn once at that size,
cropped to their ink, centred with a margin and reduced with LANCZOS.
"""

from __future__ import annotations

import random
from pathlib import Path

from ldmkit.data.builtin.card import BuildResult, Record, image_name, package_version
from ldmkit.errors import DataError

FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_PACKAGE = "fonts-noto-color-emoji"
FONT_SIZE = 109
"""The only size at which the CBDT bitmaps of Noto Color Emoji load."""
MAX_GLYPH_WIDTH = 200
"""One glyph is 136 px wide at FONT_SIZE; a sequence the font cannot ligate is two or more glyphs wide."""
MARGIN = 0.08
"""White margin around the glyph, as a fraction of the image side."""
SKIN_TONES = {0x1F3FB: "light", 0x1F3FC: "medium-light", 0x1F3FD: "medium", 0x1F3FE: "medium-dark", 0x1F3FF: "dark"}
TEMPLATES = ("{name}", "an emoji of {name}", "{name} emoji", "a {name} icon on a white background", "{alias}")

# The group sharing most words with the name wins (ties: the earlier group).
GROUP_KEYWORDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("Smileys & Emotion", frozenset(
        "face grinning smiling smile grin laughing tears joy wink winking kissing tongue zany hugging "
        "shushing thinking zipper neutral expressionless unamused smirking grimacing lying relieved pensive "
        "sleepy drooling sleeping mask thermometer nauseated vomiting sneezing hot cold woozy dizzy "
        "exploding cowboy partying disguised sunglasses nerd monocle confused worried frowning astonished "
        "flushed pleading anguished fearful anxious crying sobbing screaming confounded persevering "
        "disappointed downcast weary tired yawning angry pouting cursing skull poo clown ogre goblin ghost "
        "alien robot heart kiss mark hundred anger collision dizzy sweat droplets dashing hole speech "
        "thought zzz melting saluting peeking dotted shaking".split())),
    ("People & Body", frozenset(
        "man woman person people boy girl baby child adult older family couple hand hands finger fingers "
        "thumbs fist palm waving ok pinched pinching crossed vulcan love-you sign horns writing nail "
        "selfie flexed biceps arm leg foot ear nose brain heart anatomical lungs tooth bone eyes eye tongue "
        "mouth lips prince princess santa claus mrs mx superhero supervillain mage fairy vampire merperson "
        "merman mermaid elf genie zombie troll pilot astronaut firefighter police detective guard ninja "
        "construction worker crown turban veil tuxedo pregnant breast-feeding feeding angel health student "
        "teacher judge farmer cook mechanic factory office scientist technologist singer artist handshake "
        "bowing facepalming shrugging tipping gesturing pouting frowning walking standing kneeling running "
        "dancing levitating suit bunny steamy climbing fencing racing skier snowboarder golfing surfing "
        "rowing swimming bouncing lifting biking mountain cartwheeling wrestling water polo handball "
        "juggling lotus bath bed holding".split())),
    ("Animals & Nature", frozenset(
        "monkey gorilla orangutan dog guide service poodle wolf fox raccoon cat lion tiger leopard horse "
        "unicorn zebra deer bison cow ox buffalo pig boar ram ewe goat camel llama giraffe elephant mammoth "
        "rhinoceros hippopotamus mouse rat hamster rabbit chipmunk beaver hedgehog bat bear polar koala "
        "panda sloth otter skunk kangaroo badger paw turkey chicken rooster hatching chick bird penguin "
        "dove eagle duck swan owl dodo feather flamingo peacock parrot frog crocodile turtle lizard snake "
        "dragon sauropod t-rex spouting whale dolphin seal fish tropical blowfish shark octopus shell coral "
        "jellyfish snail butterfly bug ant honeybee beetle lady cricket cockroach spider web scorpion "
        "mosquito fly worm microbe bouquet cherry blossom flower rosette rose wilted hibiscus sunflower "
        "tulip hyacinth seedling tree evergreen deciduous palm cactus sheaf herb shamrock four clover "
        "maple fallen leaf leaves fluttering nest empty mushroom moose donkey goose jellyfish wing wings "
        "lotus phoenix".split())),
    ("Food & Drink", frozenset(
        "grapes melon watermelon tangerine lemon banana pineapple mango apple pear peach cherries "
        "strawberry strawberries blueberries kiwi tomato olive coconut avocado eggplant potato carrot ear "
        "corn pepper cucumber leafy broccoli garlic onion peanuts beans chestnut bread croissant baguette "
        "flatbread pretzel bagel pancakes waffle cheese meat poultry cut bacon hamburger fries pizza hot "
        "sandwich taco burrito tamale stuffed falafel egg cooking shallow pan pot fondue bowl salad "
        "popcorn butter salt canned bento rice cracker ball cooked curry steaming spaghetti roasted sweet "
        "oden sushi fried shrimp fish cake moon dumpling fortune takeout crab lobster squid oyster soft "
        "ice shaved cream doughnut cookie birthday shortcake cupcake pie chocolate candy lollipop custard "
        "honey baby bottle glass milk hot beverage teapot teacup sake bottle popping cork wine cocktail "
        "tropical drink beer mugs clinking tumbler pouring liquid cup straw bubble tea juice mate ice "
        "chopsticks fork knife plate spoon kitchen amphora ginger pea pod jar root".split())),
    ("Travel & Places", frozenset(
        "globe world map japan snow-capped mountain volcano mount fuji camping beach desert island "
        "national park stadium classical building construction brick rock wood hut houses derelict house "
        "home office post hospital bank hotel love convenience school department factory castle wedding "
        "tokyo tower statue liberty church mosque hindu temple synagogue shinto kaaba fountain tent "
        "foggy night stars cityscape sunrise sunset dusk bridge springs carousel playground wheel roller "
        "coaster barber pole circus locomotive railway car high-speed bullet train metro light rail "
        "station tram monorail mountain bus oncoming trolleybus minibus ambulance fire engine taxi "
        "automobile sport utility vehicle pickup truck delivery articulated lorry tractor racing "
        "motorcycle scooter wheelchair rickshaw bicycle kick skateboard roller stop motorway railway "
        "track oil drum fuel pump wheel police light traffic construction anchor ring buoy sailboat canoe "
        "speedboat passenger ship ferry motor boat airplane departure arrival parachute seat helicopter "
        "suspension mountain cableway aerial tramway satellite rocket flying saucer bellhop luggage "
        "hourglass watch alarm clock stopwatch timer mantelpiece o’clock thirty new moon crescent "
        "quarter full sun thermometer star glowing shooting milky way cloud lightning tornado fog wind "
        "cyclone rainbow closed umbrella zap snowflake snowman comet droplet water wave".split())),
    ("Activities", frozenset(
        "jack-o-lantern christmas fireworks sparkler firecracker sparkles balloon party popper confetti "
        "tanabata pine decoration carp streamer wind chime moon viewing ribbon wrapped gift reminder "
        "admission tickets ticket military medal trophy sports 1st 2nd 3rd place soccer baseball softball "
        "basketball volleyball american football rugby tennis flying disc bowling cricket game field hockey "
        "ice lacrosse ping pong badminton boxing glove martial arts uniform goal net flag in hole ice skate "
        "fishing diving mask running shirt skis sled curling stone direct hit yo-yo kite pool 8 crystal "
        "magic wand video joystick slot machine game die puzzle piece teddy piñata mirror nesting dolls "
        "spade suit club diamond joker mahjong flower playing cards performing arts framed picture palette "
        "thread sewing needle yarn knot".split())),
    ("Flags", frozenset("flag flags chequered triangular crossed".split())),
    ("Symbols", frozenset(
        "sign symbol button arrow arrows mark keycap atm litter restroom mens womens toilet passport "
        "customs baggage warning children crossing entry prohibited no bicycles smoking littering "
        "non-potable pedestrians phones under eighteen radioactive biohazard up down left right top soon "
        "place worship atom om star david wheel dharma yin yang latin orthodox cross peace menorah "
        "dotted six pointed aries taurus gemini cancer leo virgo libra scorpio sagittarius capricorn "
        "aquarius pisces ophiuchus shuffle repeat single play fast reverse pause record eject cinema dim "
        "bright antenna bars vibration mode mobile off female male transgender multiply plus minus divide "
        "equals infinity exclamation question wavy dollar currency exchange medical recycling fleur-de-lis "
        "trident emblem name badge japanese beginner hollow red circle check box ballot loop curly "
        "part alternation eight-spoked asterisk sparkle copyright registered trade hash digit number "
        "input letters numbers alphabet blood type information squared circled ideograph square triangle "
        "diamond small large medium white black orange yellow green blue purple brown".split())),
    ("Objects", frozenset(
        "glasses goggles coat necktie t-shirt jeans scarf gloves socks dress kimono sari swimsuit briefs "
        "shorts bikini clothes folding fan purse handbag clutch bag shopping backpack thong sandal shoe "
        "sneaker hiking boot flat heeled ballet boots hair pick crown hat cap helmet rescue prayer beads "
        "lipstick ring gem stone muted speaker volume loudspeaker megaphone postal horn bell musical "
        "score notes microphone level slider control knobs headphone radio saxophone accordion guitar "
        "keyboard trumpet violin banjo drum long maracas flute harp telephone receiver pager fax battery "
        "low electric plug laptop desktop computer printer trackball disk floppy optical dvd movie camera "
        "film frames projector clapper television flash video videocassette magnifying candle bulb "
        "flashlight lantern diya notebook book books ledger page scroll newspaper rolled-up bookmark "
        "label money bag coin yen euro pound banknote wings credit receipt chart envelope e-mail incoming "
        "outbox inbox package mailbox postbox pencil fountain pen paintbrush crayon memo briefcase "
        "folder calendar spiral card index pushpin paperclip paperclips straight ruler scissors file "
        "cabinet wastebasket lock locked unlocked key old hammer axe pick dagger swords bomb boomerang "
        "bow arrow shield carpentry saw wrench screwdriver nut bolt gear clamp balance scale cane link "
        "chains hook toolbox magnet ladder alembic test tube petri dish dna microscope telescope syringe "
        "drop pill adhesive bandage stethoscope x-ray door elevator window couch chair toilet plunger "
        "shower bathtub trap razor lotion safety pin broom basket roll paper soap toothbrush sponge "
        "extinguisher cart cigarette coffin headstone funeral urn nazar amulet hamsa moai placard "
        "identification shovel harp".split())),
)


def check_sources() -> None:
    """Raise a DataError saying what to install when the font or the `emoji` package is missing."""
    if not FONT_PATH.is_file():
        raise DataError(
            f"the emoji dataset needs the Noto Color Emoji font at {FONT_PATH}, which is missing; "
            f"install the Debian package: sudo apt-get install {FONT_PACKAGE}"
        )
    try:
        import emoji  # noqa: F401
    except ImportError:
        raise DataError("the emoji dataset needs the PyPI package 'emoji': pip install 'ldmkit[data]'") from None


def clean_name(short_code: str) -> str:
    """`:woman_pilot_light_skin_tone:` -> 'woman pilot: light skin tone' (CLDR style)."""
    words = short_code.strip(":").replace("_", " ")
    for tone in sorted(SKIN_TONES.values(), key=len, reverse=True):
        for suffix in (f" {tone} skin tone",):
            if words.endswith(suffix) and not words.endswith(":" + suffix):
                head = words[: -len(suffix)]
                # a second tone ('handshake: medium-light skin tone, light skin tone') joins with a comma
                for other in sorted(SKIN_TONES.values(), key=len, reverse=True):
                    if head.endswith(f" {other} skin tone"):
                        return f"{head[: -len(other) - 11]}: {other} skin tone, {tone} skin tone"
                return f"{head}: {tone} skin tone"
    return words


def guess_group(name: str, text: str) -> str:
    """Unicode-style group guessed from the name and code points (no offline source ships the real one)."""
    if all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in text) or "\U0001F3F4" in text and len(text) > 2:
        return "Flags"
    if "\u20e3" in text:
        return "Symbols"
    words = set(name.replace(":", " ").replace(",", " ").lower().split())
    hits = [(len(words & keywords), -rank, group) for rank, (group, keywords) in enumerate(GROUP_KEYWORDS)]
    best = max(hits)
    return best[2] if best[0] > 0 else "Other"


def candidates() -> list[tuple[str, dict]]:
    """Fully-qualified emoji from the `emoji` package, sorted by name (stable across runs)."""
    import emoji

    fully_qualified = emoji.STATUS["fully_qualified"]
    items = [(text, data) for text, data in emoji.EMOJI_DATA.items() if data["status"] == fully_qualified]
    return sorted(items, key=lambda item: (item[1]["en"], item[0]))


def render_emoji(text: str, font, size: int):
    """The glyph of `text` on white, size x size, or None when the font has no single glyph for it."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    if right - left <= 0 or bottom - top <= 0 or right - left > MAX_GLYPH_WIDTH:
        return None  # .notdef (no ink) or a sequence the font draws as several glyphs side by side
    canvas = Image.new("RGBA", (right - left, bottom - top), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((-left, -top), text, font=font, embedded_color=True)
    ink = canvas.getbbox()
    if ink is None:
        return None
    glyph = canvas.crop(ink)
    side = round(max(glyph.size) / (1 - 2 * MARGIN))
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


def captions_for(name: str, aliases: list[str]) -> tuple[str, ...]:
    """Name, templated name, then each distinct alias."""
    captions = [t.format(name=name) for t in TEMPLATES[:4]]
    for alias in aliases:
        if len(alias) >= 3 and alias.lower() not in {c.lower() for c in captions}:
            captions.append(alias)
    return tuple(captions)


def build(out: Path, *, n: int | None, seed: int, size: int) -> BuildResult:
    """Write every renderable emoji (or a seeded sample of n) into out/images."""
    from PIL import ImageFont

    check_sources()
    font = ImageFont.truetype(str(FONT_PATH), FONT_SIZE)
    items = candidates()
    chosen = items if n is None or n >= len(items) else sorted(random.Random(seed).sample(items, n), key=lambda it: (it[1]["en"], it[0]))
    records, skipped = [], []
    for text, data in chosen:
        image = render_emoji(text, font, size)
        name = clean_name(data["en"])
        if image is None:
            skipped.append(name)
            continue
        file_name = image_name(len(records))
        image.save(out / file_name)
        aliases = [clean_name(a) for a in data.get("alias", [])]
        tone = next((SKIN_TONES[ord(c)] for c in text if ord(c) in SKIN_TONES), "none")
        labels = {
            "emoji": text,
            "codepoints": " ".join(f"U+{ord(c):04X}" for c in text),
            "group": guess_group(name, text),
            "skin_tone": tone,
            "emoji_version": str(data["E"]),
        }
        records.append(Record(file_name, captions_for(name, aliases), labels))
    notes = [
        "group is GUESSED from name keywords and code points (no installed package ships Unicode's "
        "emoji-test.txt groups); 'Other' where no keyword matched",
        f"{len(skipped)} emoji the font cannot draw as one glyph were skipped"
        + (f" (e.g. {', '.join(skipped[:5])})" if skipped else ""),
        f"glyphs drawn at font size {FONT_SIZE}, cropped to ink, {MARGIN:.0%} white margin, LANCZOS to {size} px",
    ]
    return BuildResult(
        name="emoji",
        records=tuple(records),
        sources={"emoji": package_version("emoji"), FONT_PACKAGE: _debian_version(FONT_PACKAGE),
                 "Pillow": package_version("Pillow")},
        licenses={"emoji": "BSD-3-Clause (names from Unicode CLDR, Unicode License v3)",
                  FONT_PACKAGE: "SIL Open Font License 1.1 (images are renderings of the font)",
                  "Pillow": "MIT-CMU"},
        templates=TEMPLATES,
        notes=tuple(notes),
    )


def _debian_version(package: str) -> str:
    """Version of an installed Debian package from dpkg's status file, or 'unknown'."""
    try:
        text = Path("/var/lib/dpkg/status").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown"
    for block in text.split("\n\n"):
        if f"Package: {package}\n" in block + "\n":
            for line in block.splitlines():
                if line.startswith("Version: "):
                    return line[len("Version: "):]
    return "unknown"
