"""Mixtures of built-in datasets in one folder, e.g. `emoji+avatars` for the default model.

    card = build_mix(("emoji", "avatars"), Path("data/mix"), n={"avatars": 6000}, seed=0, size=64)

Each part is built as its own dataset in OUT/<part>/ (with its own card); OUT/metadata.jsonl lists every
image as `<part>/images/NNNNN.png` with the union of the parts' label columns ("" where a column does
not apply) and a `source` column naming the part, so one CaptionDataset reads the mixture and labels
still say where each image came from.
"""

from __future__ import annotations

import json
from pathlib import Path

from ldmkit.data.builtin.card import CARD_NAME, METADATA_NAME, README_NAME
from ldmkit.errors import UsageError

SOURCE_COLUMN = "source"


def parse_parts(name: str, known: tuple[str, ...]) -> tuple[str, ...]:
    """('emoji', 'avatars') for 'emoji+avatars'; UsageError for unknown or repeated parts."""
    parts = tuple(name.split("+"))
    bad = [p for p in parts if p not in known]
    if bad or len(set(parts)) != len(parts) or len(parts) < 2:
        raise UsageError(f"dataset mixture {name!r}: join two or more different built-in datasets with '+' "
                         f"(from {', '.join(known)}), e.g. emoji+avatars")
    return parts


def part_sizes(parts: tuple[str, ...], n: int | dict | None) -> dict[str, int | None]:
    """Images per part: n may be one count for every part, a {part: count} mapping, or None (defaults)."""
    if n is None or isinstance(n, int):
        return {p: n for p in parts}
    if not isinstance(n, dict) or set(n) - set(parts):
        raise UsageError(f"image counts {n!r}: give an integer, or a mapping from some of {', '.join(parts)} to "
                         "integers (parts left out get their default size)")
    for part, count in n.items():
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise UsageError(f"image count for {part!r} must be a positive integer or null, got {count!r}")
    return {p: n.get(p) for p in parts}


def build_mix(parts: tuple[str, ...], out: Path, *, n, seed: int, size: int, phrasings: int = 0,
              emoji_aliases: bool = False, phrasing_colours: bool = False, phrasing_words: str = "train") -> dict:
    """Build every part into OUT/<part>/ and write the mixture's metadata.jsonl, card and README
    (`phrasings` goes to the avatars part, `emoji_aliases` to the emoji part; each an error without it)."""
    from ldmkit.data.builtin.single import build_single, check_emoji_aliases, check_phrasing_options

    name = "+".join(parts)
    if phrasings != 0 and "avatars" not in parts:
        raise UsageError(f"phrasings={phrasings!r} applies to the avatars dataset, which {name!r} does not hold")
    check_emoji_aliases(emoji_aliases, "emoji" in parts, name)
    check_phrasing_options(phrasing_colours, phrasings, phrasing_words)
    sizes = part_sizes(parts, n)
    _prepare(out, name, parts)
    cards, rows = {}, []
    for part in parts:
        cards[part] = build_single(part, out / part, n=sizes[part], seed=seed, size=size,
                                   phrasings=phrasings if part == "avatars" else 0,
                                   phrasing_colours=phrasing_colours and part == "avatars",
                                   phrasing_words=phrasing_words if part == "avatars" else "train",
                                   emoji_aliases=emoji_aliases and part == "emoji")
        for line in (out / part / METADATA_NAME).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                row["file_name"] = f"{part}/{row['file_name']}"
                rows.append((part, row))
    columns = sorted({k for _, row in rows for k in row} - {"file_name", "text"})
    if SOURCE_COLUMN in columns:
        raise UsageError(f"dataset mixture {name!r}: a part already has a {SOURCE_COLUMN!r} label column")
    lines = []
    for part, row in rows:
        labels = {c: row.get(c, "") for c in columns}
        lines.append(json.dumps({"file_name": row["file_name"], "text": row["text"], SOURCE_COLUMN: part, **labels},
                                ensure_ascii=False))
    (out / METADATA_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
    card = {
        "name": name,
        "format": "imagefolder (<part>/images/ + one metadata.jsonl, captions in 'text', part in 'source')",
        "seed": seed,
        "size": size,
        "images": len(rows),
        "captions": sum(len(row["text"]) for _, row in rows),
        "parts": {part: {"images": cards[part]["images"], "n_requested": sizes[part]} for part in parts},
        "label_columns": [SOURCE_COLUMN, *columns],
        "part_cards": cards,
    } | ({"phrasings": phrasings} if phrasings else {}) | ({"phrasing_colours": True} if phrasing_colours else {}) \
        | ({"phrasing_words": phrasing_words} if phrasing_words != "train" else {}) \
        | ({"emoji_aliases": True} if emoji_aliases else {})
    (out / CARD_NAME).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    summary = ", ".join(f"{cards[p]['images']} {p}" for p in parts)
    (out / README_NAME).write_text(
        f"# {name} (built-in ldmkit dataset mixture)\n\n{len(rows)} images of {size}x{size} px ({summary}), seed "
        f"{seed}. Each part's own card and README are in its folder; the `{SOURCE_COLUMN}` column of "
        f"metadata.jsonl names the part.\n", encoding="utf-8")
    return card


def _prepare(out: Path, name: str, parts: tuple[str, ...]) -> None:
    """Accept a missing or empty folder, or an earlier build of the same mixture (its files are removed by
    the parts' own rebuild and by rewriting the top-level files); refuse anything else."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    try:
        earlier = json.loads((out / CARD_NAME).read_text(encoding="utf-8"))["name"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"output folder {out} is not empty and holds no {CARD_NAME} of an earlier build; "
                         "choose an empty or new folder") from None
    if earlier != name:
        raise UsageError(f"output folder {out} holds a build of {earlier!r}, not {name!r}; choose another folder")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in {*parts, CARD_NAME, METADATA_NAME, README_NAME})
    if foreign:
        raise UsageError(f"output folder {out} holds an earlier {name!r} build plus {', '.join(foreign[:5])}, which it "
                         "did not write; refusing to overwrite")
