"""Built-in datasets written from installed packages, fully offline: `shapes`, `emoji`, `avatars`.

    card = build_dataset("shapes", Path("data/shapes"), n=500, seed=0, size=32)

Each build writes images/ + metadata.jsonl (readable by `ldmkit.data.dataset.CaptionDataset.open`),
dataset_card.json and README.md, and returns the card. Builders import their heavy sources lazily.
"""

from __future__ import annotations

from pathlib import Path

from ldmkit.data.builtin.single import DATASETS

__all__ = ["DATASETS", "build_dataset"]


def build_dataset(name: str, out: Path, *, n: int | dict | None = None, seed: int = 0, size: int = 64,
                  phrasings: int = 0, emoji_aliases: bool = False, phrasing_colours: bool = False,
                  phrasing_words: str = "train") -> dict:
    """Write the built-in dataset `name` into `out` and return its dataset card.

    name: one of DATASETS, or a mixture such as "emoji+avatars" (see `ldmkit.data.builtin.mix`; n may
    then be a {part: count} mapping).
    n: number of images (None: the dataset's full / default size); seed: drives every random choice;
    size: side of the square images in pixels. `out` must be empty, missing, or an earlier build of
    the same dataset (whose files are then replaced).
    phrasings: free phrasings added to each `avatars` image's captions (0: none; an error for a dataset
    without avatars; see `ldmkit.data.builtin.avatar_phrasings`).
    phrasing_colours: add only phrasings that name every colour the avatar shows (hair or hat, clothing; an
    error without phrasings).
    phrasing_words: "train" (the train pool's words, held out from the free-avatars eval) or "all" (the eval
    pool's synonyms too; an error without phrasings).
    emoji_aliases: add captions from the CLDR English annotations to each `emoji` image (an error for a
    dataset without emoji, or without Debian's unicode-cldr-core; see `ldmkit.data.builtin.emoji_aliases`).
    """
    from ldmkit.data.builtin.single import build_single, check_size

    if "+" in name:
        from ldmkit.data.builtin.mix import build_mix, parse_parts

        check_size(size)
        return build_mix(parse_parts(name, DATASETS), Path(out), n=n, seed=seed, size=size, phrasings=phrasings,
                         emoji_aliases=emoji_aliases, phrasing_colours=phrasing_colours,
                         phrasing_words=phrasing_words)
    return build_single(name, Path(out), n=n, seed=seed, size=size, phrasings=phrasings, emoji_aliases=emoji_aliases,
                        phrasing_colours=phrasing_colours, phrasing_words=phrasing_words)
