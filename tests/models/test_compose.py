"""`ldmkit model compose`: a model folder's UNet/VAE/scheduler with another text encoder, loaded and run by both
ldmkit and diffusers' StableDiffusionPipeline; hidden-size mismatches, existing outputs and provenance."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ldmkit.cli import main
from ldmkit.errors import UsageError
from ldmkit.models.compose import compose_text_encoder

_spec = importlib.util.spec_from_file_location("hf_clip_fixtures", Path(__file__).with_name("hf_clip_fixtures.py"))
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny SD folder (text hidden 32, with a clip/ reading its text encoder), CLIPModels of width 32 and 48."""
    from ldmkit.models.dual_encoder import DualEncoder, DualEncoderConfig, save_dual_encoder
    from ldmkit.models.folder import save_components
    from ldmkit.models.presets import build_components

    root = tmp_path_factory.mktemp("compose")
    model, tokenizer = fixtures.tiny_clip_model(seed=7)  # the SD folder's own text encoder (a fast tokenizer)
    model.text_model.save_pretrained(root / "sd-text")
    tokenizer.save_pretrained(root / "sd-text")
    components = build_components("tiny", seed=0, text_encoder=str(root / "sd-text"))
    save_components(components, root / "sd")
    save_dual_encoder(DualEncoder(DualEncoderConfig(embed_dim=8, image_channels=(8,)), components.text_encoder),
                      root / "sd")
    return {"root": root, "sd": root / "sd",
            "clip": fixtures.tiny_clip_folder(root / "clip32", seed=3),
            "wide": fixtures.tiny_clip_folder(root / "clip48", text_hidden=48)}


def _states(text_model, tokenizer, prompt: str) -> torch.Tensor:
    ids = tokenizer([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return text_model(ids).last_hidden_state


def test_composed_folder_runs_in_ldmkit_and_diffusers_with_the_new_text_encoder(world, tmp_path):
    import diffusers
    from transformers import CLIPModel, CLIPTokenizer

    from ldmkit.pipeline import Pipeline

    out = tmp_path / "composed"
    report = compose_text_encoder(world["sd"], world["clip"], out)
    assert report.hidden_size == 32 and report.dropped == ("clip",)
    assert not (out / "clip").exists()  # its dual encoder read the replaced text encoder
    for part in ("unet", "vae"):  # copied byte for byte
        assert (out / part / "diffusion_pytorch_model.safetensors").read_bytes() == \
            (world["sd"] / part / "diffusion_pytorch_model.safetensors").read_bytes()

    clip = CLIPModel.from_pretrained(world["clip"], local_files_only=True).eval()
    tokenizer = CLIPTokenizer.from_pretrained(world["clip"])
    expected = _states(clip.text_model, tokenizer, "a red circle")

    pipe = Pipeline.from_pretrained(out)
    torch.testing.assert_close(pipe.components.text_encoder.encode(["a red circle"]), expected)
    ours = pipe("a red circle", steps=2, seed=1, sampler="ddim")
    assert ours.images[0].size == (32, 32)

    sd = diffusers.StableDiffusionPipeline.from_pretrained(out, local_files_only=True, safety_checker=None)
    sd.set_progress_bar_config(disable=True)
    torch.testing.assert_close(sd.encode_prompt("a red circle", "cpu", 1, False)[0], expected)
    theirs = sd("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(1), output_type="np",
                height=32, width=32).images
    assert theirs.shape == (1, 32, 32, 3) and np.isfinite(theirs).all()

    meta = json.loads((out / "ldmkit.json").read_text())["composed"]
    assert meta["text_encoder_from"] == str(world["clip"].resolve()) and meta["base"] == str(world["sd"].resolve())
    assert meta["replaced_text_encoder"]["hidden_size"] == 32 and meta["text_encoder"]["class"] == "CLIPTextModel"
    assert meta["dropped"] and len(meta["base_hash"]) == 12


def test_hidden_size_mismatch_names_both_numbers_and_writes_nothing(world, tmp_path):
    with pytest.raises(UsageError, match=r"gives 48-wide states.*cross-attends to 32"):
        compose_text_encoder(world["sd"], world["wide"], tmp_path / "never")
    assert not (tmp_path / "never").exists() and not list(tmp_path.iterdir())


def test_existing_out_is_refused_even_when_empty(world, tmp_path):
    (tmp_path / "there").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        compose_text_encoder(world["sd"], world["clip"], tmp_path / "there")


def test_cli_compose_from_a_clip_text_model_folder_and_from_a_finetune_run(world, tmp_path, capsys):
    """A CLIPTextModel folder with its tokenizer, and a `train clip` run whose final/clip/ is a CLIPModel."""
    import shutil

    from transformers import CLIPTextModel, CLIPTokenizer

    text = CLIPTextModel.from_pretrained(world["clip"], local_files_only=True)
    text.save_pretrained(tmp_path / "text")
    CLIPTokenizer.from_pretrained(world["clip"]).save_pretrained(tmp_path / "text")
    assert main(["model", "compose", "--from", str(world["sd"]), "--text-encoder", str(tmp_path / "text"),
                 "--out", str(tmp_path / "a")]) == 0
    assert "hidden size 32" in capsys.readouterr().out
    shutil.copytree(world["clip"], tmp_path / "run" / "final" / "clip")
    assert main(["model", "compose", "--from", str(world["sd"]), "--text-encoder", str(tmp_path / "run"),
                 "--out", str(tmp_path / "b")]) == 0
    from ldmkit.models.folder import load_components

    a, b = load_components(tmp_path / "a"), load_components(tmp_path / "b")
    torch.testing.assert_close(a.text_encoder.encode(["x"]), b.text_encoder.encode(["x"]))
    # errors are one line, no traceback
    assert main(["model", "compose", "--from", str(world["sd"]), "--text-encoder", str(world["wide"]),
                 "--out", str(tmp_path / "c")]) != 0
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ldmkit: error:") and "48" in last and "32" in last and "Traceback" not in err


def test_text_tower_of_ldmkit_own_dual_encoder_run(world, tmp_path):
    """A `train clip` result with clip.tune_text: its tuned text tower; a frozen one has none to give."""
    import copy

    from ldmkit.models.dual_encoder import DualEncoder, DualEncoderConfig, save_dual_encoder
    from ldmkit.models.folder import load_components, load_text_encoder
    from ldmkit.models.text import TextEncoder

    sd_text = load_text_encoder(world["sd"])
    tuned = TextEncoder(copy.deepcopy(sd_text.model), sd_text.tokenizer, "clip")
    with torch.no_grad():
        tuned.model.embeddings.token_embedding.weight.add_(0.5)
    save_dual_encoder(DualEncoder(DualEncoderConfig(embed_dim=8, image_channels=(8,), text_tuned=True), tuned),
                      tmp_path / "own" / "final")
    compose_text_encoder(world["sd"], tmp_path / "own", tmp_path / "out")
    torch.testing.assert_close(load_components(tmp_path / "out").text_encoder.encode(["a cat"]), tuned.encode(["a cat"]))
    with pytest.raises(UsageError, match="did not train its text tower"):
        compose_text_encoder(world["sd"], world["sd"] / "clip", tmp_path / "never")
