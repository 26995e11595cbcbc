"""`lora.text_encoder`, per-part learning rates and `lora.diffusers_format`: the files `ldmkit train lora` writes
for the UNet + text encoder load in diffusers' `StableDiffusionPipeline.load_lora_weights` and give ldmkit's image."""

from __future__ import annotations

from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch

from ldmkit.errors import UsageError
from ldmkit.models.lora_files import read_lora
from ldmkit.models.presets import build_components
from ldmkit.pipeline import Pipeline
from ldmkit.training.trainers import run_trainer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "lora-tiny.yaml"
FAST = ["train.batch_size=4", "train.progress_bar=false", "data.builtin_n=16", "train.ema_decay=0",
        "lora.text_encoder=true"]


def make_task(run_dir: Path, *extra: str):
    from ldmkit.config.recipe import apply_overrides, from_dict, read_yaml_mapping
    from ldmkit.training.lora_task import LoraTask
    from ldmkit.training.recipes import LoraRecipe

    recipe = from_dict(LoraRecipe, apply_overrides(LoraRecipe, read_yaml_mapping(CONFIG), [*FAST, *extra]))
    return LoraTask(recipe, run_dir)


@pytest.mark.slow  # loads the packaged MiniLM
def test_text_encoder_targets_clip_and_minilm():
    from ldmkit.models.text import minilm_text_encoder
    from ldmkit.training.lora_task import text_encoder_targets

    clip = build_components("tiny", seed=0).text_encoder.model
    names = text_encoder_targets(clip, "attention")
    assert names and {n.rsplit(".", 1)[1] for n in names} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    assert {n.rsplit(".", 1)[1] for n in text_encoder_targets(clip, "transformer")} - set(
        n.rsplit(".", 1)[1] for n in names) == {"fc1", "fc2"}
    bert = minilm_text_encoder().model
    attention = text_encoder_targets(bert, "attention")
    assert len(attention) == 4 * bert.config.num_hidden_layers
    assert all(n.endswith(("self.query", "self.key", "self.value", "attention.output.dense")) for n in attention)
    assert len(text_encoder_targets(bert, "transformer")) == 6 * bert.config.num_hidden_layers


@pytest.mark.slow
def test_each_part_takes_its_own_peak_learning_rate(tmp_path):
    # Adam's first step moves every weight by lr * g / (|g| + eps) ~ lr * sign(g) (Kingma & Ba 2015, §2.1): the up
    # weights start at zero, so after one step the largest |up| of a part is that part's learning rate
    run = tmp_path / "run"
    run_trainer("lora", CONFIG, run, [*FAST, "train.steps=1", "train.warmup_steps=0", "train.lr_schedule=constant",
                                      "train.lr=0.001", "lora.unet_lr=0.003", "lora.text_encoder_lr=0.0002",
                                      "train.checkpoint_every=0"])
    lora = read_lora(run / "final" / "lora.safetensors")
    peak = {part: max(float(layer.up.float().abs().max()) for (p, _), layer in lora.layers.items() if p == part)
            for part in ("unet", "text_encoder")}
    assert peak["unet"] == pytest.approx(0.003, rel=2e-3)  # fp16 file
    assert peak["text_encoder"] == pytest.approx(0.0002, rel=2e-3)
    assert lora.metadata["ss_unet_lr"] == "0.003" and lora.metadata["ss_text_encoder_lr"] == "0.0002"


def test_text_encoder_lr_without_text_encoder_is_an_error():
    with pytest.raises(UsageError, match="text_encoder_lr has no effect"):
        run_trainer("lora", CONFIG, "/nonexistent/run", ["lora.text_encoder_lr=0.001"])
    with pytest.raises(UsageError, match="lora.unet_lr"):
        run_trainer("lora", CONFIG, "/nonexistent/run", ["lora.unet_lr=0"])


def test_unet_false_trains_the_text_encoder_alone(tmp_path):
    """kohya's network_train_text_encoder_only: only text-encoder adapters in the file, the UNet untouched."""
    torch.set_num_threads(1)
    run = tmp_path / "run"
    run_trainer("lora", CONFIG, run, [*FAST, "lora.unet=false", "train.steps=2", "train.checkpoint_every=0",
                                      "train.lr=0.01"])
    lora = read_lora(run / "final" / "lora.safetensors")
    assert lora.layers and {part for part, _ in lora.layers} == {"text_encoder"}
    assert any(float(layer.up.abs().max()) > 0 for layer in lora.layers.values())  # it trained
    assert lora.metadata["ss_network_train_text_encoder_only"] == "True" and lora.metadata.get("ss_unet_lr", "") == ""
    plain = diffusers_pipe(None)("a red square", num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                                 output_type="np").images
    adapted = diffusers_pipe(run / "final" / "lora.safetensors")(
        "a red square", num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert np.abs(adapted - plain).max() > 1e-3  # diffusers reads the text-encoder-only file and applies it
    for extra, message in ((["lora.text_encoder=false"], "leaves nothing to train"),
                           (["lora.unet_lr=0.001"], "unet_lr has no effect with lora.unet: false"),
                           (["lora.targets=locon"], "locon adds the UNet's convolutions")):
        with pytest.raises(UsageError, match=message):
            run_trainer("lora", CONFIG, tmp_path / "x", [*FAST, "lora.unet=false", *extra])


def diffusers_pipe(lora_path: Path | None):
    c = build_components("tiny", seed=0)  # the base lora-tiny starts from
    pipe = diffusers.StableDiffusionPipeline(
        vae=c.vae, text_encoder=c.text_encoder.model, tokenizer=c.text_encoder.tokenizer, unet=c.unet,
        scheduler=diffusers.DDIMScheduler.from_config(c.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if lora_path is not None:
        pipe.load_lora_weights(str(lora_path))
    return pipe


def as_array(images):
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


@pytest.mark.slow
def test_unet_and_text_encoder_lora_written_by_the_trainer_give_diffusers_image(tmp_path):
    task = make_task(tmp_path / "run", "lora.alpha=2.0", "lora.diffusers_format=true")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # trained-looking but strong adapters, so the comparison is not between near-base images
        for _, _, module in task._adapters():
            for weights in (module.lora_A["default"].weight, module.lora_B["default"].weight):
                weights.copy_(torch.randn(weights.shape, generator=g) * 0.3)
    task.write_lora(tmp_path / "out")
    kohya = tmp_path / "out" / "lora.safetensors"
    lora = read_lora(kohya)
    assert {part for part, _ in lora.layers} == {"unet", "text_encoder"}
    assert {x.alpha for x in lora.layers.values()} == {2.0}
    pipe = Pipeline(build_components("tiny", seed=0))
    prompt = dict(sampler="ddim", steps=4, guidance=5.0, seed=2)
    base = pipe("a red circle", **prompt)
    base_text = pipe.text_encoder.encode(["a red circle"])
    pipe.load_lora(kohya, 1.0)
    assert (pipe.text_encoder.encode(["a red circle"]) - base_text).abs().max() > 1e-3  # the lora_te_ part acts
    ours = pipe("a red circle", **prompt)
    assert np.abs(as_array(ours.images) - as_array(base.images)).max() > 2  # the LoRA changes the image
    for name, source in (("kohya file", kohya), ("diffusers folder", tmp_path / "out")):
        ref = diffusers_pipe(source)(
            "a red circle", num_inference_steps=4, guidance_scale=5.0, output_type="pil", height=ours.params.height,
            width=ours.params.width, generator=torch.Generator().manual_seed(2)).images
        diff = np.abs(as_array(ours.images) - as_array(ref)).max()
        print(f"{name}: max pixel difference to diffusers {diff}/255")
        assert diff <= 2, name


@pytest.mark.slow  # loads the packaged MiniLM twice
def test_a_minilm_text_encoder_lora_reads_back_onto_minilm(tmp_path):
    """The default model's text encoder (BERT names: encoder.layer.N.attention.self.query) round-trips through the
    kohya file: ldmkit's hooks on a fresh MiniLM give the adapted (peft) MiniLM's states."""
    from peft import LoraConfig, inject_adapter_in_model

    from ldmkit.models.lora_files import LoraLayer
    from ldmkit.models.lora_write import save_lora
    from ldmkit.models.text import minilm_text_encoder
    from ldmkit.pipeline.lora import LoraState
    from ldmkit.training.lora_task import text_encoder_targets

    adapted, fresh = minilm_text_encoder(), minilm_text_encoder()
    targets = text_encoder_targets(adapted.model, "transformer")
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=2.0, target_modules=targets), adapted.model)
    g = torch.Generator().manual_seed(1)
    layers = {}
    with torch.no_grad():
        for name, module in adapted.model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
                a.copy_(torch.randn(a.shape, generator=g) * 0.1)
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
                layers[("text_encoder", name)] = LoraLayer(a.clone(), b.clone(), 2.0)
    path = save_lora(layers, tmp_path / "te.safetensors", dtype=torch.float32)
    assert "lora_te_encoder_layer_0_attention_self_query.lora_down.weight" in __import__(
        "safetensors.torch", fromlist=["load_file"]).load_file(path)
    adapted.model.eval()
    want = adapted.encode(["a zxq person wearing sunglasses"])
    base = fresh.encode(["a zxq person wearing sunglasses"])
    LoraState({"text_encoder": fresh.model}).load(path, 1.0)
    got = fresh.encode(["a zxq person wearing sunglasses"])
    assert (want - base).abs().max() > 1e-2
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
