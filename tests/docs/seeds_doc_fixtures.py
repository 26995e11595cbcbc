"""Tiny stand-ins, under the names docs/seeds.md uses, for what a user of the seeds has on disk (imported by path
from test_seeds_doc.py). Everything is built offline in seconds with seeded random weights; nothing is downloaded.

| name in the doc                       | stand-in                                                               |
|---------------------------------------|------------------------------------------------------------------------|
| stable-diffusion-v1-5/, -v1-4/        | tiny SD folder as diffusers writes it (PNDM scheduler, no ldmkit.json)  |
| v1-5-pruned-emaonly.safetensors       | the v1-5 stand-in as one CompVis-layout checkpoint                     |
| clip-vit-large-patch14/               | tiny CLIPModel folder, text width 32 = the SD stand-ins' context width  |
| clip-vit-base-patch32/                | tiny CLIPModel folder, text width 48 (like the real 512 != 768)         |
| Flickr8k/                             | Images/*.jpg + captions.txt (CSV image,caption), 5 captions per image  |
| Flickr30k/                            | results.csv (`image_name| comment_number| comment`) + flickr30k_images/ |
| faces/<person>/                       | 3 persons, 4:3 photos of a face on a plain background                   |
| my-photo.jpg, my-domain/              | an init image; a metadata.jsonl captioned folder                        |
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

from PIL import Image, ImageDraw

TESTS = Path(__file__).resolve().parents[1]
COLOURS = {"red": (200, 40, 40), "blue": (40, 60, 200), "green": (40, 170, 60), "yellow": (230, 210, 40)}
THINGS = ("dog", "ball", "boat")
PERSONS = {"mahesh_babu": ((210, 40, 40), (250, 210, 170)),  # folder: (background, face) colours
           "prabhas": ((40, 60, 210), (140, 90, 50)),
           "allu_arjun": ((40, 180, 60), (250, 240, 100))}


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sd_folder(path: Path, *, seed: int) -> Path:
    """A tiny SD 1.x-style folder (CLIP text tower of width 32, PNDM) without ldmkit's own ldmkit.json."""
    from ldmkit.models import build_components, save_components

    save_components(build_components("tiny", seed=seed), path)
    (path / "ldmkit.json").unlink()
    return path


def compvis_file(path: Path, *, seed: int) -> Path:
    """A tiny SD model as one original-layout (CompVis) .safetensors checkpoint."""
    from safetensors.torch import save_file

    from ldmkit.models import build_components

    to_compvis = _load("single_file_helpers", TESTS / "models" / "test_single_file.py").to_compvis
    save_file(to_compvis(build_components("tiny", seed=seed)), str(path))
    return path


def _picture(index: int, size: tuple[int, int] = (48, 36)) -> tuple[Image.Image, str, str]:
    """A coloured thing on a grey ground at a position that depends on index: (image, colour, thing)."""
    colour = list(COLOURS)[index % len(COLOURS)]
    thing = THINGS[index % len(THINGS)]
    image = Image.new("RGB", size, (120 + 5 * (index % 7), 120, 110))
    w, h = size
    x = 4 + (index * 7) % (w - 20)
    y = 4 + (index * 5) % (h - 20)
    draw = ImageDraw.Draw(image)
    if thing == "ball":
        draw.ellipse([x, y, x + 14, y + 14], fill=COLOURS[colour])
    else:
        draw.rectangle([x, y, x + 16, y + 10 + index % 5], fill=COLOURS[colour])
    return image, colour, thing


def _captions(colour: str, thing: str, index: int) -> list[str]:
    place = ("field", "beach", "park", "street")[index % 4]
    return [f"a {colour} {thing} in a {place}", f"a {thing} that is {colour}", f"the {colour} {thing}",
            f"a photo of a {colour} {thing} at the {place}", f"one {colour} {thing}, number {index}"]


def flickr8k(root: Path, n: int = 40) -> Path:
    """Flickr8k as Kaggle ships it: Images/<id>.jpg and captions.txt ('image,caption', five lines per image)."""
    (root / "Images").mkdir(parents=True)
    with (root / "captions.txt").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["image", "caption"])
        for i in range(n):
            image, colour, thing = _picture(i)
            name = f"{1000268201 + 17 * i}_{i:04x}.jpg"
            image.save(root / "Images" / name, quality=95)
            for caption in _captions(colour, thing, i):
                out.writerow([name, caption])
    return root


def flickr30k(root: Path, n: int = 40) -> Path:
    """Flickr30k as distributed: results.csv ('image_name| comment_number| comment') + flickr30k_images/."""
    (root / "flickr30k_images").mkdir(parents=True)
    lines = ["image_name| comment_number| comment"]
    for i in range(n):
        image, colour, thing = _picture(i + 3, size=(40, 48))
        name = f"{36979 + 31 * i}.jpg"
        image.save(root / "flickr30k_images" / name, quality=95)
        lines += [f"{name}| {k}| {caption}" for k, caption in enumerate(_captions(colour, thing, i))]
    (root / "results.csv").write_text("\n".join(lines) + "\n")
    return root


def faces(root: Path, per_person: int = 4) -> Path:
    """root/<person>/<i>.jpg: a 4:3 photo with a face (ellipse) on a plain background, shifted per image."""
    for name, (background, face) in PERSONS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_person):
            image = Image.new("RGB", (64, 48), background)
            dx, dy = 3 * i, i % 2
            ImageDraw.Draw(image).ellipse([18 + dx, 6 + dy, 38 + dx, 34 + dy], fill=face)
            image.save(root / name / f"{i:03d}.jpg", quality=95)
    return root


def domain(root: Path, n: int = 16) -> Path:
    """A captioned folder in the Hugging Face imagefolder layout (metadata.jsonl), a 'domain' of its own."""
    root.mkdir(parents=True)
    rows = []
    for i in range(n):
        image, colour, _ = _picture(i, size=(40, 40))
        image.save(root / f"scan-{i:03d}.png")
        rows.append(json.dumps({"file_name": f"scan-{i:03d}.png", "text": f"a {colour} lesion, scan {i % 3}"}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


def build_all(root: Path) -> dict[str, Path]:
    """Every stand-in under root: {name in the doc: path}."""
    hf = _load("hf_clip_fixtures", TESTS / "models" / "hf_clip_fixtures.py")
    root.mkdir(parents=True, exist_ok=True)
    made = {
        "stable-diffusion-v1-5": sd_folder(root / "stable-diffusion-v1-5", seed=0),
        "stable-diffusion-v1-4": sd_folder(root / "stable-diffusion-v1-4", seed=1),
        "v1-5-pruned-emaonly.safetensors": compvis_file(root / "v1-5-pruned-emaonly.safetensors", seed=0),
        "clip-vit-large-patch14": hf.tiny_clip_folder(root / "clip-vit-large-patch14", text_hidden=32, seed=3),
        "clip-vit-base-patch32": hf.tiny_clip_folder(root / "clip-vit-base-patch32", text_hidden=48, seed=4),
        "Flickr8k": flickr8k(root / "Flickr8k"),
        "Flickr30k": flickr30k(root / "Flickr30k"),
        "faces": faces(root / "faces"),
        "my-domain": domain(root / "my-domain"),
    }
    image, _, _ = _picture(5, size=(40, 32))
    image.save(root / "my-photo.jpg", quality=95)
    made["my-photo.jpg"] = root / "my-photo.jpg"
    return made


def link_world(made: dict[str, Path], cwd: Path, configs: Path) -> None:
    """Make a fresh working directory look like the user's: stand-ins and the repository's configs/ by name."""
    cwd.mkdir(parents=True, exist_ok=True)
    for name, path in made.items():
        (cwd / name).symlink_to(path, target_is_directory=path.is_dir())
    (cwd / "configs").symlink_to(configs, target_is_directory=True)

