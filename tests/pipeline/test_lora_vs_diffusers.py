"""LoRA application against diffusers' own (`StableDiffusionPipeline.load_lora_weights`, peft underneath), on tiny
random SD-layout components: the same UNet outputs and the same images, for files ldmkit writes and for files in
the layout kohya sd-scripts writes (LoCon conv keys, with and without alpha)."""

import diffusers
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ldmkit.models.lora_files import LoraLayer, read_lora, target_modules
from ldmkit.models.lora_write import lora_metadata, merge_loras, save_lora
from ldmkit.models.presets import build_components
from ldmkit.pipeline import Pipeline
from ldmkit.models.lora_files import parse_lora_arg
from ldmkit.pipeline.lora import LoraState, pipeline_models

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "conv1", "conv2", "time_emb_proj")
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")  # all of them: diffusers needs out_proj


def random_layers(components, seed, rank=4, alpha=2.0, text_encoder=True):
    """A random LoRA on the attention, resnet 3x3 convs and projections of the UNet (+ the text encoder)."""
    g = torch.Generator().manual_seed(seed)
    parts = {"unet": (components.unet, UNET_TARGETS)}
    if text_encoder:
        parts["text_encoder"] = (components.text_encoder.model, TE_TARGETS)
    layers = {}
    for part, (model, targets) in parts.items():
        for name, module in target_modules(model).items():
            if name.endswith(targets):
                w = module.weight
                down = torch.randn(rank, *w.shape[1:], generator=g) * 0.3
                up = torch.randn(w.shape[0], rank, *([1, 1] if w.dim() == 4 else []), generator=g) * 0.3
                layers[(part, name)] = LoraLayer(down, up, alpha)
    return layers


@pytest.fixture(scope="module")
def components():
    return build_components("tiny", seed=0)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(5)
    return torch.randn(2, 4, 16, 16, generator=g), torch.tensor([999, 400]), torch.randn(2, 77, 32, generator=g)


def unet_out(unet, inputs):
    x, t, ctx = inputs
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=ctx).sample


def diffusers_pipe(lora_path=None, scale=1.0):
    c = build_components("tiny", seed=0)  # fresh weights: peft wraps the modules it targets
    pipe = diffusers.StableDiffusionPipeline(
        vae=c.vae, text_encoder=c.text_encoder.model, tokenizer=c.text_encoder.tokenizer, unet=c.unet,
        scheduler=diffusers.DDIMScheduler.from_config(c.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if lora_path is not None:
        pipe.load_lora_weights(str(lora_path), adapter_name="a")
        pipe.set_adapters(["a"], [scale])
    return pipe


def as_array(images):
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


@pytest.mark.parametrize("fmt", ["kohya", "peft"])
def test_a_file_ldmkit_writes_gives_diffusers_unet_outputs(components, inputs, tmp_path, fmt):
    path = save_lora(random_layers(components, 1), tmp_path / "l.safetensors", fmt=fmt,
                     metadata=lora_metadata(rank=4, alpha=2.0))
    state = LoraState(pipeline_models(Pipeline(components)))
    base = unet_out(components.unet, inputs)
    state.load(path, 0.8)
    ours = unet_out(components.unet, inputs)
    state.unload()
    ref = unet_out(diffusers_pipe(path, 0.8).unet, inputs)
    assert (ours - base).abs().max() > 0.1  # the LoRA does something
    print(f"{fmt}: max |UNet output difference| to diffusers {(ours - ref).abs().max().item():.2e}")
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    assert torch.equal(unet_out(components.unet, inputs), base)  # unload: the base model exactly


def sd_scripts_file(components, path, alpha):
    """The tensors kohya sd-scripts' networks/lora.py writes for a LoCon (conv_dim set) on SD 1.x: flat names,
    fp16, conv down [r, in, 3, 3] / up [out, r, 1, 1], 1x1 convs as 4-D, `.alpha` per module unless dropped."""
    g = torch.Generator().manual_seed(2)
    sd = {}
    for part, prefix, model in (("unet", "lora_unet", components.unet),
                                ("te", "lora_te", components.text_encoder.model)):
        for name, module in target_modules(model).items():
            if not name.endswith(UNET_TARGETS if part == "unet" else TE_TARGETS):
                continue
            key = f"{prefix}_{'text_model_' if part == 'te' else ''}{name.replace('.', '_')}"
            w, rank = module.weight, 4 if w_is_linear(module) else 2
            sd[f"{key}.lora_down.weight"] = torch.randn(rank, *w.shape[1:], generator=g) * 0.2
            sd[f"{key}.lora_up.weight"] = torch.randn(w.shape[0], rank, *([1, 1] if w.dim() == 4 else []),
                                                      generator=g) * 0.2
            if alpha:
                sd[f"{key}.alpha"] = torch.tensor(1.0)
    save_file({k: v.half() for k, v in sd.items()}, path, metadata={"ss_network_module": "networks.lora"})
    return path


def w_is_linear(module):
    return isinstance(module, torch.nn.Linear)


@pytest.mark.parametrize("alpha", [True, False])
def test_a_kohya_sd_scripts_file_gives_diffusers_images(components, tmp_path, alpha):
    path = sd_scripts_file(components, tmp_path / "kohya.safetensors", alpha)
    pipe = Pipeline(components)
    base = pipe("a red circle", sampler="ddim", steps=4, guidance=5.0, seed=3)
    state = LoraState(pipeline_models(pipe))
    warnings = state.load(path, 0.7)
    assert bool(warnings) != alpha
    ours = pipe("a red circle", sampler="ddim", steps=4, guidance=5.0, seed=3)
    state.unload()
    ref = diffusers_pipe(path, 0.7)(
        "a red circle", num_inference_steps=4, guidance_scale=5.0, output_type="pil", height=ours.params.height,
        width=ours.params.width, generator=torch.Generator().manual_seed(3)).images
    assert np.abs(as_array(ours.images) - as_array(base.images)).max() > 2  # the LoRA changes the image
    diff = np.abs(as_array(ours.images) - as_array(ref)).max()
    print(f"kohya file (alpha={alpha}): max pixel difference to diffusers {diff}/255")
    assert diff <= 2


def test_scale_zero_is_the_base_model_and_fuse_equals_unfused(components, inputs, tmp_path):
    path = save_lora(random_layers(components, 3), tmp_path / "l.safetensors", dtype=torch.float32)
    state = LoraState(pipeline_models(Pipeline(components)))
    base = unet_out(components.unet, inputs)
    state.load(path, 0.0)
    assert torch.equal(unet_out(components.unet, inputs), base)
    state.load(path, 1.3)
    unfused = unet_out(components.unet, inputs)
    state.fuse()
    assert not state.hooks
    torch.testing.assert_close(unet_out(components.unet, inputs), unfused, rtol=1e-4, atol=1e-4)
    state.unload()
    assert torch.equal(unet_out(components.unet, inputs), base)


def test_merged_file_equals_both_applied_at_runtime(components, inputs, tmp_path):
    a = save_lora(random_layers(components, 4, rank=2, alpha=1.0), tmp_path / "a.safetensors", dtype=torch.float32)
    b = save_lora(random_layers(components, 5, rank=3, alpha=6.0, text_encoder=False), tmp_path / "b.safetensors",
                  dtype=torch.float32)
    state = LoraState(pipeline_models(Pipeline(components)))
    state.load(a, 0.7)
    state.load(b, -0.4)
    stacked = unet_out(components.unet, inputs)
    state.unload()
    merged = save_lora(merge_loras([(read_lora(a), 0.7), (read_lora(b), -0.4)]), tmp_path / "m.safetensors",
                       dtype=torch.float32)
    assert {layer.rank for layer in read_lora(merged).layers.values()} == {2, 5}  # unet: 2 + 3; text encoder: a alone
    state.load(merged)
    torch.testing.assert_close(unet_out(components.unet, inputs), stacked, rtol=1e-5, atol=1e-5)
    state.unload()


def test_parse_lora_arg():
    assert parse_lora_arg("a.safetensors:0.5") == ("a.safetensors", 0.5)
    assert parse_lora_arg("dir:x/a.safetensors") == ("dir:x/a.safetensors", 1.0)
    assert parse_lora_arg("a.safetensors") == ("a.safetensors", 1.0)


def test_fuse_twice_then_unload_restores_the_base_bit_for_bit(components, inputs, tmp_path):
    a = save_lora(random_layers(components, 6), tmp_path / "a.safetensors")
    b = save_lora(random_layers(components, 7, rank=2), tmp_path / "b.safetensors")
    state = LoraState(pipeline_models(Pipeline(components)))
    base = unet_out(components.unet, inputs)
    te_base = {k: v.clone() for k, v in components.text_encoder.model.state_dict().items()}
    state.load(a, 1.0)
    state.fuse()
    state.load(b, 0.5)
    both = unet_out(components.unet, inputs)
    state.fuse()
    torch.testing.assert_close(unet_out(components.unet, inputs), both, rtol=1e-4, atol=1e-4)
    state.unload()
    assert torch.equal(unet_out(components.unet, inputs), base)
    assert all(torch.equal(v, te_base[k]) for k, v in components.text_encoder.model.state_dict().items())


def test_pipeline_load_lora_gives_diffusers_image_and_unload_the_base(components, tmp_path):
    path = save_lora(random_layers(components, 8), tmp_path / "l.safetensors")
    pipe = Pipeline(components)
    base = pipe("a blue square", sampler="ddim", steps=4, seed=1)
    assert pipe.load_lora(path, 0.6) == []
    ours = pipe("a blue square", sampler="ddim", steps=4, seed=1)
    pipe.fuse_lora()
    fused = pipe("a blue square", sampler="ddim", steps=4, seed=1)
    pipe.unload_lora()
    again = pipe("a blue square", sampler="ddim", steps=4, seed=1)
    ref = diffusers_pipe(path, 0.6)("a blue square", num_inference_steps=4, output_type="pil",
                                    height=ours.params.height, width=ours.params.width,
                                    generator=torch.Generator().manual_seed(1)).images
    assert np.abs(as_array(ours.images) - as_array(ref)).max() <= 2
    assert np.abs(as_array(fused.images) - as_array(ours.images)).max() <= 1
    assert np.array_equal(as_array(again.images), as_array(base.images))
    assert np.abs(as_array(ours.images) - as_array(base.images)).max() > 2


@pytest.mark.slow  # ~10 s: a model folder and four generate runs
def test_generate_cli_lora(tmp_path, capsys):
    from ldmkit.cli import main

    model = tmp_path / "model"
    assert main(["model", "init", "--preset", "tiny", str(model)]) == 0
    lora = save_lora(random_layers(build_components("tiny", seed=0), 9), tmp_path / "l.safetensors")
    common = ["generate", "a red circle", "--model", str(model), "--steps", "3", "--quiet"]
    outs = {}
    for name, extra in (("base", []), ("zero", ["--lora", f"{lora}:0"]), ("one", ["--lora", str(lora)])):
        assert main([*common, *extra, "-o", str(tmp_path / name)]) == 0
        (png,) = (tmp_path / name).glob("*.png")
        outs[name] = np.asarray(__import__("PIL.Image").Image.open(png), dtype=np.int16)
    assert np.array_equal(outs["zero"], outs["base"]) and np.abs(outs["one"] - outs["base"]).max() > 2
    capsys.readouterr()
    assert main([*common, "--lora", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x")]) == 2
    assert main([*common, "--lora", str(lora), "--compile", "-o", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "no such LoRA file" in err and "--compile" in err and not (tmp_path / "x").exists()
