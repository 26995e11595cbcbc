"""Build one built-in dataset (not a mixture): the step that `build_dataset` and each part of a mixture share."""

from __future__ import annotations

from pathlib import Path

from ldmkit.errors import UsageError

DATASETS = ("shapes", "emoji", "avatars")


def build_single(name: str, out: Path, *, n: int | None, seed: int, size: int, phrasings: int = 0,
                 emoji_aliases: bool = False, phrasing_colours: bool = False, phrasing_words: str = "train") -> dict:
    """Write the built-in dataset `name` (one of DATASETS) into `out`; returns its card (see build_dataset).
    phrasings > 0 (avatars only) adds that many free phrasings per image to its captions (each naming every
    colour the avatar shows with phrasing_colours; words of both pools with phrasing_words="all"); emoji_aliases
    (emoji only) adds captions from the CLDR annotations (ldmkit.data.builtin.emoji_aliases)."""
    from ldmkit.data.builtin.card import make_card, prepare_output, write_build

    if name not in DATASETS:
        raise UsageError(f"unknown built-in dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise UsageError(f"n must be a positive integer or None, got {n!r}")
    check_size(size)
    if phrasings != 0:
        from ldmkit.data.builtin.avatar_phrasings import check_phrasings

        check_phrasings(phrasings)
        if name != "avatars":
            raise UsageError(f"phrasings={phrasings!r} applies to the avatars dataset only, not {name!r}")
    check_emoji_aliases(emoji_aliases, name == "emoji", name)
    check_phrasing_options(phrasing_colours, phrasings, phrasing_words)
    out = Path(out)
    builder = _builder(name)
    builder_check = getattr(builder, "check_sources", None)
    if builder_check is not None:
        builder_check()  # fail (e.g. missing font) before touching the output folder
    if emoji_aliases:
        from ldmkit.data.builtin.emoji_aliases import check_cldr

        check_cldr()
    prepare_output(out, name)
    result = builder.build(out, n=n, seed=seed, size=size)
    if phrasings:  # 0: the records and card of a plain build, unchanged
        from ldmkit.data.builtin.avatar_phrasings import with_phrasings

        result = with_phrasings(result, seed, phrasings, colours=phrasing_colours, words=phrasing_words)
    if emoji_aliases:  # False: the records and card of a plain build, unchanged
        from ldmkit.data.builtin.emoji_aliases import with_aliases

        result = with_aliases(result)
    card = (make_card(result, n=n, seed=seed, size=size) | ({"phrasings": phrasings} if phrasings else {})
            | ({"phrasing_colours": True} if phrasing_colours else {})
            | ({"phrasing_words": phrasing_words} if phrasing_words != "train" else {})
            | ({"emoji_aliases": True} if emoji_aliases else {}))
    write_build(out, result, card)
    return card


def check_size(size) -> None:
    if not isinstance(size, int) or not 16 <= size <= 1024:
        raise UsageError(f"size must be an integer number of pixels in [16, 1024], got {size!r}")


def check_emoji_aliases(emoji_aliases, has_emoji: bool, name: str) -> None:
    """UsageError unless emoji_aliases is a bool, and True only for a dataset holding emoji."""
    if not isinstance(emoji_aliases, bool):
        raise UsageError(f"emoji_aliases must be true or false, got {emoji_aliases!r}")
    if emoji_aliases and not has_emoji:
        raise UsageError(f"emoji_aliases applies to the emoji dataset, which {name!r} does not hold")


def check_phrasing_options(phrasing_colours, phrasings, phrasing_words="train", *, prefix: str = "") -> None:
    """UsageError unless phrasing_colours is a bool and phrasing_words one of avatar_phrasings.WORDS, each
    other than its default only with phrasings to apply it to."""
    from ldmkit.data.builtin.avatar_phrasings import check_phrasing_words

    if not isinstance(phrasing_colours, bool):
        raise UsageError(f"{prefix}phrasing_colours must be true or false, got {phrasing_colours!r}")
    check_phrasing_words(phrasing_words, prefix=prefix)
    for key, value in (("phrasing_colours", phrasing_colours), ("phrasing_words", phrasing_words)):
        if value not in (False, "train") and not phrasings:
            raise UsageError(f"{prefix}{key}={value!r} has no effect without {prefix}phrasings: it chooses which "
                             "free phrasings are added")


def check_caption_options(name: str | None, phrasings, emoji_aliases, phrasing_colours=False, phrasing_words="train",
                          *, prefix: str = "") -> None:
    """UsageError unless `phrasings`, `emoji_aliases`, `phrasing_colours` and `phrasing_words` are valid and
    change a build of `name` (a dataset or mixture name; None: no built-in dataset). `prefix` names the settings
    in messages ("data.builtin_")."""
    from ldmkit.data.builtin.avatar_phrasings import MAX_PHRASINGS

    if isinstance(phrasings, bool) or not isinstance(phrasings, int) or not 0 <= phrasings <= MAX_PHRASINGS:
        raise UsageError(f"{prefix}phrasings must be an integer in [0, {MAX_PHRASINGS}], got {phrasings!r}")
    if not isinstance(emoji_aliases, bool):
        raise UsageError(f"{prefix}emoji_aliases must be true or false, got {emoji_aliases!r}")
    check_phrasing_options(phrasing_colours, phrasings, phrasing_words, prefix=prefix)
    parts = set(name.split("+")) if isinstance(name, str) else set()
    for key, value, part in (("phrasings", phrasings, "avatars"), ("emoji_aliases", emoji_aliases, "emoji")):
        if value and part not in parts:
            why = f"the built-in dataset {name!r} holds no {part}" if name else "no built-in dataset is built"
            raise UsageError(f"{prefix}{key}={value!r} has no effect: it adds {part} captions, and {why}")


def border_trim(name: str) -> bool:
    """Whether training trims uniform borders off this built-in dataset (or mixture) by default: a builder module
    declares BORDER_TRIM = False when its backdrop is part of what the captions say (shapes' positions and sizes);
    a mixture holding such a part is not trimmed either."""
    parts = name.split("+")
    unknown = [part for part in parts if part not in DATASETS]
    if unknown:
        raise UsageError(f"unknown built-in dataset {unknown[0]!r}; choose from {', '.join(DATASETS)}")
    return all(getattr(_builder(part), "BORDER_TRIM", True) for part in parts)


def card_border_trim(folder: Path) -> bool | None:
    """border_trim of the built-in dataset whose card is in `folder` (None: no readable built-in card there)."""
    import json

    from ldmkit.data.builtin.card import CARD_NAME

    try:
        name = json.loads((Path(folder) / CARD_NAME).read_text(encoding="utf-8")).get("name")
        return border_trim(name) if isinstance(name, str) else None
    except (OSError, ValueError, UsageError):
        return None


def _builder(name: str):
    """The module that builds `name`: it has build(out, *, n, seed, size) -> BuildResult."""
    import importlib

    return importlib.import_module(f"ldmkit.data.builtin.{name}")
