"""`ldmkit model merge`: (1 - alpha) x A + alpha x B for the named parts, loaded and run by ldmkit and diffusers;
refusals (alpha, parts, architectures, equal weights, existing output), kept parts that differ, a packaged MiniLM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ldmkit.cli import main
from ldmkit.errors import UsageError
from ldmkit.models import build_components, save_components
from ldmkit.models.merge import merge_models

UNET = Path("unet") / "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """a: a tiny model with a dual encoder reading its text encoder; b: a with its UNet moved (a "fine-tune");
    c: other weights in every part; wide: a UNet of another architecture (8 latent channels)."""
    from ldmkit.models.dual_encoder import DualEncoder, DualEncoderConfig, save_dual_encoder

    root = tmp_path_factory.mktemp("merge")
    c = build_components("tiny", seed=0)
    save_components(c, root / "a")
    save_dual_encoder(DualEncoder(DualEncoderConfig(embed_dim=8, image_channels=(8,)), c.text_encoder), root / "a")
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in c.unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    save_components(c, root / "b")
    save_components(build_components("tiny", seed=1), root / "c")
    save_components(build_components("tiny", seed=0, latent_channels=8), root / "wide")
    return root


def test_merged_unet_is_the_weighted_sum_and_runs_in_ldmkit_and_diffusers(world, tmp_path):
    import diffusers

    from ldmkit.pipeline import Pipeline

    out = tmp_path / "m"
    report = merge_models(world / "a", world / "b", out, alpha=0.25)
    assert report.parts == ("unet",) and report.kept_differing == () and report.dropped == ()
    a, b, m = (load_file(str(folder / UNET)) for folder in (world / "a", world / "b", out))
    assert report.tensors == len(m) == len(a)
    for name in a:
        torch.testing.assert_close(m[name], 0.75 * a[name] + 0.25 * b[name])
    assert any(not torch.equal(m[n], a[n]) for n in a) and any(not torch.equal(m[n], b[n]) for n in a)
    for kept in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "clip/config.json"):
        assert (out / kept).read_bytes() == (world / "a" / kept).read_bytes()
    record = json.loads((out / "ldmkit.json").read_text())["merged"]
    assert record["alpha"] == 0.25 and record["parts"] == ["unet"] and record["b"] == str((world / "b").resolve())

    ours = Pipeline.from_pretrained(out)("a red circle", steps=2, seed=1, sampler="ddim")
    assert ours.images[0].size == (32, 32)
    sd = diffusers.StableDiffusionPipeline.from_pretrained(out, local_files_only=True, safety_checker=None)
    for name, value in sd.unet.state_dict().items():
        torch.testing.assert_close(value, m[name])
    sd.set_progress_bar_config(disable=True)
    theirs = sd("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(1), output_type="np",
                height=32, width=32).images
    assert theirs.shape == (1, 32, 32, 3) and np.isfinite(theirs).all()


def test_cli_merges_and_refuses_bad_requests_in_one_line(world, tmp_path, capsys):
    a, b = str(world / "a"), str(world / "b")
    assert main(["model", "merge", a, b, "--alpha", "0.5", "--out", str(tmp_path / "m")]) == 0
    assert "unet = 0.5 x" in capsys.readouterr().out
    bad = {
        "--out": ["--alpha", "0.5", "--out", str(tmp_path / "m")],  # exists: never overwritten
        "strictly between 0 and 1": ["--alpha", "1", "--out", str(tmp_path / "x")],
        "got 0.0": ["--alpha", "0", "--out", str(tmp_path / "x")],
        "got nan": ["--alpha", "nan", "--out", str(tmp_path / "x")],
        "unknown part 'clip'": ["--alpha", "0.5", "--parts", "unet,clip", "--out", str(tmp_path / "x")],
        "twice": ["--alpha", "0.5", "--parts", "unet,unet", "--out", str(tmp_path / "x")],
        "vae/, text_encoder/ hold the same weights": ["--alpha", "0.5", "--parts", "unet,vae,text_encoder", "--out",
                                                      str(tmp_path / "x")],
    }
    for expected, args in bad.items():
        assert main(["model", "merge", a, b, *args]) != 0
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1].startswith("ldmkit: error:") and expected in err and "Traceback" not in err
    assert main(["model", "merge", a, a, "--alpha", "0.5", "--out", str(tmp_path / "x")]) != 0
    assert "same folder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.*"))


def test_other_architectures_are_refused_before_anything_is_written(world, tmp_path):
    with pytest.raises(UsageError, match="unet/ differs in architecture: tensor 'conv_in.weight' has shape"):
        merge_models(world / "a", world / "wide", tmp_path / "m", alpha=0.5)
    assert not any(tmp_path.iterdir())


def test_parts_kept_from_a_that_differ_are_reported_and_a_dual_encoder_on_a_merged_text_encoder_is_dropped(
        world, tmp_path):
    report = merge_models(world / "a", world / "c", tmp_path / "m", alpha=0.5)
    assert report.kept_differing == ("vae", "text_encoder") and (tmp_path / "m" / "clip").is_dir()
    report = merge_models(world / "a", world / "c", tmp_path / "t", alpha=0.5, parts=("unet", "text_encoder"))
    assert report.kept_differing == ("vae",) and report.dropped == ("clip",) and not (tmp_path / "t" / "clip").exists()
    a, c, t = (load_file(str(f / "text_encoder" / "model.safetensors")) for f in (world / "a", world / "c", tmp_path / "t"))
    name = next(n for n in a if a[n].is_floating_point() and not torch.equal(a[n], c[n]))
    torch.testing.assert_close(t[name], 0.5 * a[name] + 0.5 * c[name])


def test_a_packaged_minilm_reference_reads_the_installed_weights(tmp_path):
    from ldmkit.models.folder import PACKAGED_REF, packaged_reference

    save_components(build_components("tiny", seed=0, text_encoder="minilm"), tmp_path / "full")
    shutil.copytree(tmp_path / "full", tmp_path / "ref")
    (tmp_path / "ref" / "text_encoder" / "model.safetensors").unlink()  # as the shipped default model refers to it
    (tmp_path / "ref" / "text_encoder" / PACKAGED_REF).write_text(json.dumps(packaged_reference()))
    unet = load_file(str(tmp_path / "ref" / UNET))
    from safetensors.torch import save_file

    save_file({k: v + 0.01 for k, v in unet.items()}, str(tmp_path / "ref" / UNET))
    report = merge_models(tmp_path / "full", tmp_path / "ref", tmp_path / "m", alpha=0.5)
    assert report.kept_differing == ()  # the reference is the same MiniLM as the full copy
    with pytest.raises(UsageError, match="text_encoder/ holds the same weights in A and B"):
        merge_models(tmp_path / "ref", tmp_path / "full", tmp_path / "n", alpha=0.5, parts=("unet", "text_encoder"))


def test_lora_fuse_writes_the_model_generate_lora_samples_and_diffusers_loads_it(world, tmp_path, capsys):
    """A LoRA on the UNet and the text encoder, fused into a folder: the same images as applying it at generation,
    untouched files byte for byte, diffusers' UNet equal; refusals in one line."""
    import diffusers

    from ldmkit.models.lora_files import LoraLayer, target_modules
    from ldmkit.models.lora_write import save_lora
    from ldmkit.pipeline import Pipeline

    base = Pipeline.from_pretrained(world / "a")
    g = torch.Generator().manual_seed(3)
    layers = {(part, name): LoraLayer(0.3 * torch.randn(4, m.weight.shape[1], generator=g),
                                      0.3 * torch.randn(m.weight.shape[0], 4, generator=g), 2.0)
              for part, model in (("unet", base.unet), ("text_encoder", base.text_encoder.model))
              for name, m in target_modules(model).items() if name.endswith(("to_k", "to_v", "q_proj", "v_proj"))}
    lora = save_lora(layers, tmp_path / "l.safetensors", dtype=torch.float32)
    assert main(["lora", "fuse", str(world / "a"), f"{lora}:0.7", "--out", str(tmp_path / "fused")]) == 0
    assert "unet 16 weights); not copied: clip/ (read the text encoder the LoRA changed)" in capsys.readouterr().out

    base.load_lora(lora, 0.7)
    applied = base("a red circle", steps=3, seed=2, sampler="ddim").images[0]
    fused = Pipeline.from_pretrained(tmp_path / "fused")("a red circle", steps=3, seed=2, sampler="ddim").images[0]
    plain = Pipeline.from_pretrained(world / "a")("a red circle", steps=3, seed=2, sampler="ddim").images[0]
    a, f, p = (np.asarray(im, dtype=np.int16) for im in (applied, fused, plain))
    assert np.abs(a - f).max() <= 1 and np.abs(a - p).max() > 2
    kept = "vae/diffusion_pytorch_model.safetensors"
    assert (tmp_path / "fused" / kept).read_bytes() == (world / "a" / kept).read_bytes()
    assert not (tmp_path / "fused" / "clip").exists()  # its projection was trained on the old text encoder
    record = json.loads((tmp_path / "fused" / "ldmkit.json").read_text())["fused_loras"]
    assert record["loras"][0]["scale"] == 0.7 and set(record["layers"]) == {"unet", "text_encoder"}
    unet_only = save_lora({k: v for k, v in layers.items() if k[0] == "unet"}, tmp_path / "u.safetensors")
    assert main(["lora", "fuse", str(world / "a"), str(unet_only), "--out", str(tmp_path / "fused-unet")]) == 0
    assert "not copied" not in capsys.readouterr().out
    clip_config = Path("clip") / "config.json"
    assert (tmp_path / "fused-unet" / clip_config).read_bytes() == (world / "a" / clip_config).read_bytes()
    sd = diffusers.StableDiffusionPipeline.from_pretrained(tmp_path / "fused", local_files_only=True,
                                                           safety_checker=None)
    for name, value in load_file(str(tmp_path / "fused" / UNET)).items():
        torch.testing.assert_close(sd.unet.state_dict()[name], value)

    for args, expected in (([f"{lora}:0", "--out", str(tmp_path / "x")], "scale 0"),
                           ([str(lora), "--out", str(tmp_path / "fused")], "already exists"),
                           ([str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "x")], "no such LoRA file")):
        assert main(["lora", "fuse", str(world / "a"), *args]) != 0
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
    wide = save_lora({("unet", "conv_in"): LoraLayer(torch.zeros(2, 8, 3, 3), torch.zeros(4, 2, 1, 1), 2.0)},
                     tmp_path / "wide.safetensors")
    assert main(["lora", "fuse", str(world / "a"), str(wide), "--out", str(tmp_path / "x")]) != 0
    assert "do not fit" in capsys.readouterr().err and not (tmp_path / "x").exists()
