"""`ldmkit generate` with the typed request: random seeds, Karras sigmas, spacing, init image sizing, no overwrite."""

import re

import pytest
from PIL import Image

from ldmkit.cli import main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from ldmkit.models.folder import save_components
    from ldmkit.models.presets import build_components

    path = tmp_path_factory.mktemp("models") / "tiny"
    save_components(build_components("tiny", seed=0), path)
    return path


def generate(tiny_model, out, *args) -> int:
    return main(["generate", "a red circle", "--model", str(tiny_model), "--steps", "2", "-o", str(out), "--quiet",
                 *args])


def test_seed_minus_one_prints_and_stores_the_seed_used(tiny_model, tmp_path, capsys):
    assert generate(tiny_model, tmp_path / "o", "--seed", "-1", "--n", "2") == 0
    captured = capsys.readouterr()
    seed = int(re.search(r"ldmkit: note: random seed (\d+)", captured.err).group(1))
    first, second = sorted((tmp_path / "o").glob("*.png"), key=lambda p: p.stat().st_mtime_ns)
    assert first.name == f"a-red-circle-{seed}.png" and second.name == f"a-red-circle-{seed + 1}.png"
    assert f"Seed: {seed}," in Image.open(first).text["parameters"]
    assert str(first) in captured.out.split()


def test_karras_and_timestep_spacing_flags_reach_the_sampler_and_the_png(tiny_model, tmp_path):
    assert generate(tiny_model, tmp_path / "a", "--sampler", "euler") == 0
    assert generate(tiny_model, tmp_path / "b", "--sampler", "euler", "--karras", "--timestep-spacing",
                    "trailing") == 0
    (plain,), (karras,) = (tmp_path / "a").glob("*.png"), (tmp_path / "b").glob("*.png")
    text = Image.open(karras).text["parameters"]
    assert "Schedule type: Karras" in text and "Timestep spacing: trailing" in text
    assert Image.open(plain).tobytes() != Image.open(karras).tobytes()


def test_trajectory_files_never_overwrite(tiny_model, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    mine = out / "a-red-circle-0-trajectory.png"
    mine.write_bytes(b"the user's own file")
    assert generate(tiny_model, out, "--trajectory") == 0
    assert mine.read_bytes() == b"the user's own file"
    assert (out / "a-red-circle-0-trajectory-1.png").exists() and (out / "a-red-circle-0-trajectory-1.gif").exists()
    assert not (out / "a-red-circle-0-trajectory.gif").exists()  # the pair keeps one name


def test_large_init_image_is_resized_to_the_model_size_with_a_note(tiny_model, tmp_path, capsys):
    init = tmp_path / "big.png"
    Image.new("RGB", (256, 128), (0, 120, 250)).save(init)
    assert generate(tiny_model, tmp_path / "o", "--init-image", str(init), "--strength", "0.5") == 0
    assert "ldmkit: note: init image 256x128 is larger than the model's 32x32: sampling at 32x16" \
        in capsys.readouterr().err
    (png,) = (tmp_path / "o").glob("*.png")
    assert Image.open(png).size == (32, 16)


@pytest.mark.slow
def test_best_of_passes_the_whole_request_to_every_candidate(tiny_model, tmp_path):
    import shutil

    import torch

    from ldmkit.models.dual_encoder import DualEncoder, DualEncoderConfig, save_dual_encoder
    from ldmkit.models.folder import load_components

    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    torch.manual_seed(0)
    dual = DualEncoder(DualEncoderConfig(embed_dim=16, image_channels=(8, 16)), load_components(model).text_encoder)
    save_dual_encoder(dual, model)
    out = tmp_path / "o"
    assert main(["generate", "a red circle", "--model", str(model), "--steps", "2", "--best-of", "2", "--n", "2",
                 "--seed", "3", "--negative", "blue", "--sampler", "euler", "--karras", "-o", str(out),
                 "--quiet"]) == 0
    pngs = sorted(out.glob("*.png"))
    seeds = sorted(int(p.stem.rsplit("-", 1)[1]) for p in pngs)
    assert len(pngs) == 2 and seeds[0] in (3, 4) and seeds[1] in (5, 6)  # image k: candidates 3 + 2k, 4 + 2k
    text = Image.open(pngs[0]).text["parameters"]
    assert "Negative prompt: blue" in text and "Sampler: euler" in text and "Schedule type: Karras" in text


def test_strength_zero_is_the_round_trip_and_draws_no_empty_trajectory(tiny_model, tmp_path, capsys):
    init = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (0, 120, 250)).save(init)
    assert generate(tiny_model, tmp_path / "o", "--init-image", str(init), "--strength", "0", "--trajectory",
                    "--sampler", "ddim") == 0
    assert "no denoising step ran" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["a-red-circle-0.png"]
