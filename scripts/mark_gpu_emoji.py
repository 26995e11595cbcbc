"""Add a `gpu_trained_emoji` label (yes|no) to an emoji+avatars dataset's metadata.jsonl (docs/quality.md).

    .venv/bin/python scripts/mark_gpu_emoji.py DATASET OUT

The shipped model's GPU phase ran where Pillow has no libraqm, so only emoji that Pillow's BASIC layout
draws as one glyph were in its data (1,173 of 3,789). This redoes that test here and writes OUT, a copy
of DATASET (images hard-linked) whose rows say whether each emoji could have been trained on there;
`ldmkit eval ... --where gpu_trained_emoji=no` then scores only emoji neither training phase saw.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def basic_layout_emoji() -> set[str]:
    from PIL import ImageFont

    from ldmkit.data.builtin import emoji as E

    font = ImageFont.truetype(str(E.FONT_PATH), E.FONT_SIZE, layout_engine=ImageFont.Layout.BASIC)
    drawn = set()
    for text, _ in E.candidates():
        left, top, right, bottom = font.getbbox(text)
        if right - left > 0 and bottom - top > 0 and right - left <= E.MAX_GLYPH_WIDTH:
            drawn.add(text)
    return drawn


def main(src: Path, out: Path) -> int:
    if out.exists():
        raise SystemExit(f"{out} exists; choose a new folder")
    seen = basic_layout_emoji()
    for f in sorted(p for p in src.rglob("*") if p.is_file() and p.name != "metadata.jsonl"):
        target = out / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, target)
    rows, marked = [], 0
    for line in (src / "metadata.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        hit = row.get("source") == "emoji" and row.get("emoji") in seen
        row["gpu_trained_emoji"] = "yes" if hit else "no"
        marked += hit
        rows.append(json.dumps(row, ensure_ascii=False))
    (out / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"{len(seen)} emoji drawable with the basic layout; {marked} rows of {src} marked gpu_trained_emoji=yes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1]), Path(sys.argv[2])))
