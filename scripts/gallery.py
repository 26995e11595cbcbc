"""README gallery: a grid of prompts -> images from a model (default: the shipped one), plus one trajectory.

    .venv/bin/python scripts/gallery.py [--model DIR] [--out docs/images]

Writes OUT/gallery.png (one row per prompt, seeds 0..3, 2x nearest-neighbour upscaled so 64 px images are
visible), OUT/trajectory.png and OUT/trajectory.gif (x_t | predicted x0 at every step). The first prompts are
emoji names and captions in the training templates' words; the rows marked "[free]" are written the way people
write (other sentence shapes and synonyms: docs/quality.md, "Free phrasing").
"""

from __future__ import annotations

import argparse
from pathlib import Path

PROMPTS = (
    "a smiling face with sunglasses",
    "red heart",
    "pizza",
    "a cat face",
    "a person with long blonde hair and glasses, smiling",
    "a man with a big black beard and a blue hoodie, grinning",
    "a person with a pastel pink afro and sunglasses",
    "a person with a bald head and an eyepatch, looking sad",
)
FREE_PROMPTS = (
    "a ginger guy with a beard",
    "profile pic: someone with a pink afro and shades",
    "could you draw a woman with curly hair in a navy hoodie?",
)
SEEDS = (0, 1, 2, 3)
SCALE = 2


def main(argv: list[str] | None = None) -> int:
    import torch
    from PIL import Image, ImageDraw

    from ldmkit.cli.generate import default_model_dir
    from ldmkit.pipeline import Pipeline
    from ldmkit.pipeline.trajectory import save_trajectory

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pipe = Pipeline.from_pretrained(args.model or default_model_dir())
    side = pipe.components.image_size * SCALE
    label_w = 400
    rows = [(p, p) for p in PROMPTS] + [(p, f"{p} [free]") for p in FREE_PROMPTS]
    grid = Image.new("RGB", (label_w + side * len(SEEDS), side * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for row, (prompt, label) in enumerate(rows):
        images = pipe(prompt, seed=SEEDS[0], num_images=len(SEEDS)).images
        draw.text((6, row * side + side // 2 - 6), label, fill="black")
        for col, image in enumerate(images):
            grid.paste(image.resize((side, side), Image.Resampling.NEAREST), (label_w + col * side, row * side))
    args.out.mkdir(parents=True, exist_ok=True)
    grid.save(args.out / "gallery.png")
    result = pipe(PROMPTS[0], seed=0, trajectory=True)
    grid_path, gif_path = save_trajectory(result.trajectory, args.out, "smiling-face", final=result.images[0])
    grid_path.replace(args.out / "trajectory.png")
    gif_path.replace(args.out / "trajectory.gif")
    print(args.out / "gallery.png", args.out / "trajectory.png", args.out / "trajectory.gif")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
