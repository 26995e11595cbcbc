"""docs/seeds.md runs as written: every ```bash block of each seed's section, in order, in a fresh working
directory holding tiny stand-ins under the doc's names (seeds_doc_fixtures.py), then the files the section says
are produced exist.

What the test changes, and why:
- Training commands get `--set` overrides appended (tiny_overrides): 2 steps, 32 px, the tiny preset, small
  built-in datasets. Everything else of every command is verbatim from the doc.
- `ldmkit eval` gets `--n 4 --n-boot 20 --steps 2` appended (argparse keeps the last value), `generate` nothing.
- Commands run in this process through `ldmkit.cli.main(argv)`, the function the `ldmkit` console script calls
  (`sys.exit(main())`), not one subprocess each: on the shared 2-core machine every new Python process paid
  ~22 s to import torch + diffusers + transformers (measured), i.e. >15 min for the ~40 commands.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "seeds.md"
_spec = importlib.util.spec_from_file_location("seeds_doc_fixtures", Path(__file__).with_name("seeds_doc_fixtures.py"))
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

pytestmark = pytest.mark.slow

LOOP = ["train.steps=2", "train.batch_size=4", "train.warmup_steps=0", "train.checkpoint_every=0",
        "train.validate_every=0", "train.log_every=1", "train.progress_bar=false"]
TINY = {  # recipe -> overrides that shrink it (the loop's are added to every training command)
    "configs/vae-64.yaml": ["model.preset=tiny", "data.image_size=32", "vae.crop=0"],
    "configs/seed-faces.yaml": ["model.preset=tiny", "data.image_size=32", "data.val_fraction=0"],
    "configs/clip-finetune.yaml": ["data.image_size=32", "data.val_fraction=0.1", "data.test_fraction=0.3",
                                   "train.batch_size=8"],
    "configs/seed-flickr-unet.yaml": ["data.image_size=32", "train.mixed_precision=no"],
    "configs/vae-shapes.yaml": ["data.builtin_n=16"],
    "configs/shapes-32.yaml": ["data.builtin_n=24", "data.val_fraction=0.25"],
    "configs/clip-shapes.yaml": ["data.builtin_n=16", "data.val_fraction=0.25"],
    "configs/seed-domain-finetune.yaml": [],
}

# Per seed: files the section says are produced (each must be named in the section's text, and exist after).
PRODUCES = {
    "000": ["faces-preview.png", "runs/faces-vae/final", "runs/faces/final",
            "outputs/faces/a-photo-of-mahesh-babu-0.png",
            "outputs/faces/a-photo-of-mahesh-babu-3.png",
            "runs/faces-cosine/final", "runs/faces-ztsnr/final", "outputs/faces/a-photo-of-prabhas-0.png"],
    "001": ["runs/clip-flickr8k/clip_report.json", "runs/clip-flickr8k/final/clip", "models/sd15-flickr8k",
            "outputs/seed001/a-golden-retriever-playing-in-a-field-0.png", "outputs/seed001-original",
            "outputs/seed001/a-toddler-playing-in-a-sandbox-0.png", "models/sd15-from-file",
            "flickr8k-preview.png", "runs/sd15-flickr8k/final"],
    "002": ["outputs/seed002/an-otter-wearing-sunglasses-relaxing-on-a-floati-0.png", "outputs/seed002-no-cfg",
            "outputs/seed002-cfg12", "outputs/seed002-img2img/a-swimming-pool-on-a-sunny-day-watercolour-0.png",
            "outputs/seed002-default"],
    "003": ["runs/clip-flickr30k/clip_report.json", "runs/clip-flickr30k/final/clip",
            "outputs/seed003/dog-playing-on-a-beach-0.png", "runs/eval-sd14/metrics.json",
            "models/sd14-flickr30k", "outputs/seed003/a-man-giving-food-to-cats-0.png"],
    "004": ["runs/vae-shapes/final", "runs/shapes-32/final", "runs/clip-shapes/final/clip",
            "runs/eval-shapes/metrics.json", "runs/eval-samplers/metrics.json", "runs/shapes-cosine/final",
            "runs/domain/final", "outputs/seed004-domain/a-red-lesion-0.png"],
}


def sections() -> dict[str, str]:
    """{'000': text of '## Seed 000 ...' up to the next '## ', ...}."""
    parts = re.split(r"^## Seed (\d{3})\b", DOC.read_text(), flags=re.M)
    return {parts[i]: parts[i + 1].split("\n## ")[0] for i in range(1, len(parts), 2)}


def bash_commands(text: str) -> list[list[str]]:
    """Each command line of the section's ```bash blocks (backslash continuations joined, comments dropped)."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def tiny_overrides(argv: list[str]) -> list[str]:
    if argv[:2] == ["ldmkit", "train"]:
        config = argv[argv.index("--config") + 1]
        return [a for s in LOOP + TINY[config] for a in ("--set", s)]
    if argv[:2] == ["ldmkit", "eval"]:
        return ["--n", "4", "--n-boot", "20", "--steps", "2"]
    return []


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return fixtures.build_all(tmp_path_factory.mktemp("standins"))


def run_seed(seed: str, world, tmp_path, monkeypatch, capsys) -> str:
    """Run the section's commands in a fresh folder; returns everything they printed."""
    import torch

    from ldmkit.cli import main

    torch.set_num_threads(2)
    text = sections()[seed]
    cwd = tmp_path / "work"
    fixtures.link_world(world, cwd, ROOT / "configs")
    monkeypatch.chdir(cwd)
    printed = []
    commands = bash_commands(text)
    assert commands, f"seed {seed}: no ```bash commands"
    for argv in commands:
        assert argv[0] == "ldmkit", f"seed {seed}: the doc's commands are ldmkit commands only: {shlex.join(argv)}"
        code = main(argv[1:] + tiny_overrides(argv))
        out = capsys.readouterr()
        printed.append(out.out + out.err)
        assert code == 0, f"seed {seed}: `{shlex.join(argv)}` exited {code}:\n{out.err[-3000:]}"
    for path in PRODUCES[seed]:
        assert path in text, f"seed {seed}: {path} is checked but the doc does not name it"
        assert (cwd / path).exists(), f"seed {seed}: the doc says {path} is produced; it is not there"
    return "\n".join(printed)


def test_seed_000_persons_by_name_trimming_schedules(world, tmp_path, monkeypatch, capsys):
    printed = run_seed("000", world, tmp_path, monkeypatch, capsys)
    assert "class mahesh_babu: 4 images, caption 'a photo of mahesh babu'" in printed
    assert 'mahesh_babu -> "a photo of mahesh babu" (4 images)' in printed  # model info's classes


def test_seed_001_flickr8k_clip_finetune_compose_generate_augment(world, tmp_path, monkeypatch, capsys):
    import json

    printed = run_seed("001", world, tmp_path, monkeypatch, capsys)
    assert "text->image R@10" in printed  # the before/after table, on the terminal
    meta = json.loads((tmp_path / "work" / "models" / "sd15-flickr8k" / "ldmkit.json").read_text())
    assert meta["composed"]["text_encoder_from"].endswith("clip-flickr8k")


def test_seed_002_generation_walkthrough(world, tmp_path, monkeypatch, capsys):
    run_seed("002", world, tmp_path, monkeypatch, capsys)
    out = tmp_path / "work" / "outputs"
    stem = "an-otter-wearing-sunglasses-relaxing-on-a-floati-0"
    assert (out / "seed002" / f"{stem}-trajectory.png").exists()
    assert (out / "seed002" / f"{stem}-trajectory.gif").exists()
    assert list((out / "seed002-default").glob("*-trajectory.gif"))
    # the ```python block of the section, as written, in the same folder
    (code,) = re.findall(r"^```python\n(.*?)^```", sections()["002"], flags=re.M | re.S)
    scope: dict = {}
    exec(compile(code, "docs/seeds.md (seed 002)", "exec"), scope)
    assert (tmp_path / "work" / "otter.png").exists()
    assert tuple(scope["context"].shape[:2]) == (1, 77) and len(scope["previews"]) == 20


def test_seed_003_flickr30k_report_pndm_compose(world, tmp_path, monkeypatch, capsys):
    from ldmkit.cli import main

    printed = run_seed("003", world, tmp_path, monkeypatch, capsys)
    assert "image->text R@1" in printed and "%" in printed
    # the ```text block: a ViT-B/32 text tower (the stand-in: 48 wide, like 512 for the real one) is refused
    text = sections()["003"]
    ((shown, message),) = re.findall(r"^```text\n\$ (ldmkit model compose .*)\n(ldmkit: error: .*)\n", text, flags=re.M)
    assert main(shlex.split(shown)[1:]) != 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == message.replace("512-wide", "48-wide").replace("to 768", "to 32")  # the stand-ins' widths
    assert not (tmp_path / "work" / "models" / "sd14-b32").exists()


def test_seed_004_from_scratch_schedulers_domain(world, tmp_path, monkeypatch, capsys):
    import json

    run_seed("004", world, tmp_path, monkeypatch, capsys)
    metrics = json.loads((tmp_path / "work" / "runs" / "eval-samplers" / "metrics.json").read_text())
    assert len(metrics["conditions"]) == 4  # one per swept sampler


def test_doc_is_linked_from_the_readme_and_every_seed_has_a_section():
    assert "docs/seeds.md" in (ROOT / "README.md").read_text()
    assert sorted(sections()) == ["000", "001", "002", "003", "004"] == sorted(PRODUCES)
