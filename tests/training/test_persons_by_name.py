"""Issue 12 point 4 / seed 000: "prompts like 'Mahesh Babu' produce tailored outputs".

One folder of synthetic "faces" per person (each person with clearly different pixel statistics: skin
and background colours), a tiny class-conditional UNet trained on them through the CLI, then: `model
info` lists each class with the prompt to type, and prompting each person's name gives images whose
colour statistics are closer to that person's real images than to any other person's, by a margin.

The VAE is the shipped default model's (a pretrained autoencoder, as in the seed's workflow): a random
VAE scrambles colours (measured: round trips of every person's images had the same mean colour within
1/255), so nothing could be told apart after decoding. The UNet and its training are the test's own.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from ldmkit.cli import main

pytestmark = pytest.mark.slow
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PERSONS = {"mahesh_babu": ((210, 40, 40), (250, 210, 170)),   # folder: (background, face) colours
           "prabhas": ((40, 60, 210), (140, 90, 50)),
           "allu_arjun": ((40, 180, 60), (250, 240, 100))}
SEEDS = (0, 1, 2)


def person_folders(root: Path, per_person: int = 4) -> Path:
    """root/<person>/<i>.png: a face (ellipse) on a background, shifted by a pixel or two per image."""
    for name, (background, face) in PERSONS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_person):
            image = Image.new("RGB", (32, 32), background)
            dx, dy = i % 2, i // 2
            ImageDraw.Draw(image).ellipse([9 + dx, 6 + dy, 23 + dx, 26 + dy], fill=face)
            image.save(root / name / f"{i}.png")
    return root


def colour_stats(image) -> np.ndarray:
    """Mean R, G, B in [0, 1]: the pixel statistics the persons differ in."""
    return np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(0) / 255


def test_each_persons_name_generates_that_person(tmp_path, capsys):
    import ldmkit
    from ldmkit.pipeline import Pipeline

    torch.set_num_threads(2)
    data = person_folders(tmp_path / "faces")
    run = tmp_path / "persons"
    sets = [f"data.path={data}", "data.val_fraction=0", "unet.class_conditional=true",
            f"model.vae_from={Path(ldmkit.__file__).parent / 'default_model'}", "model.text_encoder=minilm",
            "unet.prediction_type=v_prediction",  # learns each person's colours in ~50 steps (epsilon: 150+)
            "train.steps=100", "train.batch_size=12", "train.lr=0.004", "train.lr_schedule=constant",
            "train.warmup_steps=0", "train.ema_decay=0.9", "train.checkpoint_every=0", "train.progress_bar=false",
            "train.deterministic=false"]
    assert main(["train", "unet", "--config", str(CONFIGS / "tiny.yaml"), "--out", str(run),
                 *[a for s in sets for a in ("--set", s)]]) == 0
    err = capsys.readouterr().err
    assert '    mahesh_babu: 4 images, "a photo of mahesh babu"' in err  # the summary before step 1

    assert main(["model", "info", str(run / "final")]) == 0
    info = capsys.readouterr().out
    assert ('classes      3: allu_arjun -> "a photo of allu arjun" (4 images); mahesh_babu -> "a photo of mahesh '
            'babu" (4 images); prabhas -> "a photo of prabhas" (4 images)') in info
    classes = json.loads((run / "final" / "ldmkit.json").read_text())["dataset"]["classes"]
    prompts = {c["class"]: c["prompt"] for c in classes}
    assert prompts == {name: "a photo of " + name.replace("_", " ") for name in PERSONS}

    real = {name: np.mean([colour_stats(Image.open(p)) for p in sorted((data / name).glob("*.png"))], axis=0)
            for name in PERSONS}
    pipe = Pipeline.from_pretrained(run / "final")
    asked = [name for name in PERSONS for _ in SEEDS]
    results = pipe.generate_batch([prompts[n] for n in asked], [s for _ in PERSONS for s in SEEDS],
                                  steps=10, guidance=5.0)
    generated: dict[str, list] = {}
    for name, result in zip(asked, results):
        generated.setdefault(name, []).append(colour_stats(result.images[0]))
    hits, margins = 0, {}
    for name, stats in generated.items():
        for s in stats:
            distance = {other: np.linalg.norm(s - ref) for other, ref in real.items()}
            hits += min(distance, key=distance.get) == name
        mean = np.mean(stats, axis=0)
        distance = {other: np.linalg.norm(mean - ref) for other, ref in real.items()}
        margins[name] = min(d for other, d in distance.items() if other != name) / distance[name]
    print(f"persons: {hits}/{len(asked)} images nearest their own person; margins {margins}")  # pytest -s
    # every person: on average over seeds, clearly nearer their own real images than anyone else's
    assert min(margins.values()) >= 1.3, margins  # measured 1.65 / 2.09 / 3.4 (CPU, 100 steps)
    assert hits >= len(asked) - 1, f"{hits}/{len(asked)} images nearest their own person; margins {margins}"
