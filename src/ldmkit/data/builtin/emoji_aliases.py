"""Extra `emoji` captions from the CLDR English annotations (issue 17): the words people use for an emoji.

    result = with_aliases(result)      # the emoji BuildResult with CLDR captions added to each record

Source: Debian's `unicode-cldr-core` (CLDR_DIR/annotations/en.xml and annotationsDerived/en.xml). Each emoji
has a name (`type="tts"`, e.g. "pizza") and keywords ("cheese | pizza | slice"). Captions added per image,
after the builder's own (TEMPLATES and the `emoji` package's aliases), skipping any already there:

- the CLDR name, when it differs from the `emoji` package's name;
- for at most MAX_KEYWORDS keywords, most specific first: "{a|an} {keyword} emoji" ("a slice emoji"),
  and the bare keyword too when no other emoji has it ("cheese" is shared with the cheese wedge, so not bare).

A keyword is skipped when it is generic (it annotates more than MAX_SHARED emoji, counted without skin-tone
variants: "face", "heart", "smile", "green"), shorter than MIN_LETTERS ("+1", "up"), a skin-tone word, or a
name of some emoji: a CLDR name, or a name or alias the `emoji` package gives ("cat" on the cat face,
"India" on the lotus, "thumbs up" on a toned thumbs up). A prompt naming one emoji is so never taught to
another image, and the names of emoji held out of training (the test split, which the eval prompts with)
caption no trained image. Skin-tone variants take the keywords of their base emoji (the tone stays in the
name only). Of 3,963 emoji (CLDR 41, emoji 2.16) 70% get at least one caption this way.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ldmkit.data.builtin.card import article
from ldmkit.errors import DataError, UsageError

CLDR_DIR = Path("/usr/share/unicode/cldr/common")
CLDR_PACKAGE = "unicode-cldr-core"
CLDR_FILES = ("annotations/en.xml", "annotationsDerived/en.xml")
MAX_FILE_BYTES = 8 * 1024 * 1024
"""Refuse annotation files larger than this (CLDR 41's are 0.26 and 0.41 MB) before parsing them."""
MAX_SHARED = 4
"""A keyword annotating more emoji than this (skin-tone variants not counted) is generic and skipped."""
MAX_KEYWORDS = 4
"""At most this many keywords of an emoji become captions (the name captions stay the majority)."""
MIN_LETTERS = 3
"""Keywords shorter than this ("ok", "up") are skipped: too vague alone."""
TONES = frozenset("\U0001F3FB\U0001F3FC\U0001F3FD\U0001F3FE\U0001F3FF")
VARIATION_SELECTOR = "\uFE0F"
"""CLDR keys have U+FE0F removed (see the comment in annotations/en.xml)."""


@dataclass(frozen=True)
class Annotations:
    """CLDR English annotations: name and keywords per emoji, and how many emoji share each keyword."""

    names: Mapping[str, str]
    """Key (code points, U+FE0F removed) -> CLDR name ("red heart")."""
    keywords: Mapping[str, tuple[str, ...]]
    """Key -> keywords in file order ("heart", "red heart")."""
    shared: Mapping[str, int]
    """Keyword (lower case) -> number of emoji without a skin-tone modifier that it annotates."""
    all_names: frozenset[str]
    """Every CLDR name, lower case (a keyword equal to one names that emoji, never a caption of another)."""


def check_cldr(root: Path | None = None) -> None:
    """UsageError naming the Debian package when the CLDR annotation files are missing."""
    root = CLDR_DIR if root is None else Path(root)
    missing = [str(root / f) for f in CLDR_FILES if not (root / f).is_file()]
    if missing:
        raise UsageError(f"emoji aliases need the CLDR annotations ({', '.join(missing)} missing); install the "
                         f"Debian package: sudo apt-get install {CLDR_PACKAGE}")


def load_annotations(root: Path | None = None) -> Annotations:
    """The annotations under root (default CLDR_DIR), parsed once per process."""
    root = CLDR_DIR if root is None else Path(root)
    check_cldr(root)
    return _load(str(root.resolve()))


@functools.lru_cache(maxsize=2)
def _load(root: str) -> Annotations:
    import xml.etree.ElementTree as ET

    names: dict[str, str] = {}
    keywords: dict[str, tuple[str, ...]] = {}
    for rel in CLDR_FILES:
        path = Path(root) / rel
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MB; not a CLDR annotation file")
        try:
            tree = ET.parse(path)
        except ET.ParseError as err:
            raise DataError(f"{path} is not readable XML ({err}); reinstall {CLDR_PACKAGE}") from None
        for node in tree.getroot().iter("annotation"):
            cp, text = node.get("cp"), (node.text or "").strip()
            if not cp or not text:
                continue
            key = cp.replace(VARIATION_SELECTOR, "")
            if node.get("type") == "tts":
                names.setdefault(key, text)
            else:
                keywords.setdefault(key, tuple(w.strip() for w in text.split("|") if w.strip()))
    shared: dict[str, int] = {}
    for key, words in keywords.items():
        if not TONES & set(key):
            for word in {w.lower() for w in words}:
                shared[word] = shared.get(word, 0) + 1
    return Annotations(names, keywords, shared, frozenset(n.lower() for n in names.values()))


def alias_captions(text: str, captions: tuple[str, ...], notes: Annotations,
                   taken: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """The captions that CLDR adds to an emoji `text` already captioned `captions` (see the module docstring);
    `taken`: lower-case names and aliases the `emoji` package gives any emoji (never a keyword caption)."""
    key = text.replace(VARIATION_SELECTOR, "")
    base = "".join(c for c in key if c not in TONES)
    name = notes.names.get(key)
    own = {c.lower() for c in captions} | ({name.lower()} if name else set())
    words = notes.keywords.get(base, notes.keywords.get(key, ()))
    kept = [w for w in words if _specific(w, own, taken, notes)]
    kept.sort(key=lambda w: (notes.shared.get(w.lower(), 0), w.lower()))
    extra = [name] if name and name.lower() not in taken else []  # captions already there go below
    for word in kept[:MAX_KEYWORDS]:
        extra.append(f"{article(word)} {word} emoji")
        if notes.shared.get(word.lower(), 0) <= 1:
            extra.append(word)
    seen, out = {c.lower() for c in captions}, []
    for caption in extra:
        if caption.lower() not in seen:
            seen.add(caption.lower())
            out.append(caption)
    return tuple(out)


def _specific(word: str, own: set[str], taken: frozenset[str], notes: Annotations) -> bool:
    low = word.lower()
    return (low not in own and low not in taken and len(low) >= MIN_LETTERS and "skin tone" not in low
            and notes.shared.get(low, 0) <= MAX_SHARED and low not in notes.all_names)


def package_names() -> frozenset[str]:
    """Lower-case names and aliases (as the builder captions them) of every emoji of the `emoji` package: it
    knows emoji newer than CLDR and calls flags by the country ("India"), so these are names of emoji too."""
    from ldmkit.data.builtin.emoji import candidates, clean_name

    found = set()
    for _, data in candidates():
        found.add(clean_name(data["en"]).lower())
        found.update(clean_name(a).lower() for a in data.get("alias", []))
    return frozenset(found)


def with_aliases(result, root: Path | None = None):
    """The emoji BuildResult with alias_captions added to each record (records keep their files and labels)."""
    from ldmkit.data.builtin.card import Record

    notes = load_annotations(root)
    taken = package_names()
    records, added = [], 0
    for record in result.records:
        extra = alias_captions(record.labels["emoji"], record.captions, notes, taken)
        added += len(extra)
        records.append(Record(record.file_name, record.captions + extra, record.labels))
    note = (f"{added} captions added from the CLDR English annotations ({CLDR_PACKAGE}): the CLDR name where it "
            f"differs, and up to {MAX_KEYWORDS} keywords per emoji that annotate at most {MAX_SHARED} emoji and "
            "name no other emoji (ldmkit/data/builtin/emoji_aliases.py)")
    from ldmkit.data.builtin.emoji import _debian_version

    return replace(result, records=tuple(records), notes=(*result.notes, note),
                   sources={**result.sources, CLDR_PACKAGE: _debian_version(CLDR_PACKAGE)},
                   licenses={**result.licenses, CLDR_PACKAGE: "Unicode License (CLDR annotations)"})
