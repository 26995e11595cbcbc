"""LoRA files and embeddings recorded in the PNG parameters the A1111 way (<lora:NAME:SCALE> in the prompt,
`Lora hashes` and `TI hashes` fields), read back by ldmkit's parser; `ldmkit generate --lora --embedding` against
diffusers on the same model folder (issue 16)."""

import hashlib
import struct

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit.models.embeddings import embedding_metadata, save_embedding
from ldmkit.models.lora_files import LoraLayer, target_modules
from ldmkit.models.lora_write import lora_metadata, save_lora
from ldmkit.models.presets import build_components
from ldmkit.pipeline.output import parameters_text, parse_adapters, parse_parameters
from ldmkit.pipeline.result import GenerationParams

A1111_TEXT = (  # the layout A1111 1.x writes (hand-made values)
    "masterpiece, a cat <lora:add_detail:0.5> <lora:style-x:1>\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, "
    'Model hash: 6ce0161689, Model: v1-5, Lora hashes: "add_detail: 7c6bad76eb54, style-x: 0123456789ab", '
    'TI hashes: "easynegative: c74b4e810b03", Version: v1.7.0'
)


def test_an_a1111_parameters_text_is_read():
    fields = parse_parameters(A1111_TEXT)
    assert fields["prompt"] == "masterpiece, a cat" and fields["negative_prompt"] == "blurry, lowres"
    assert fields["Lora hashes"] == "add_detail: 7c6bad76eb54, style-x: 0123456789ab"
    assert fields["Version"] == "v1.7.0" and fields["Model"] == "v1-5" and fields["Size"] == "512x512"
    assert parse_adapters(A1111_TEXT) == {"loras": [("add_detail", 0.5, "7c6bad76eb54"), ("style-x", 1.0, "0123456789ab")],
                                          "embeddings": [("easynegative", "c74b4e810b03")]}


def test_params_with_adapters_round_trip():
    p = GenerationParams("a <zxq>, smiling", "dark", 4, "ddim", 5.0, 0.0, 3, 32, 32, None, "abc", "tiny",
                         loras=(("a", 0.6, "0123456789ab"), ("b", -1.0, "")), embeddings=(("<zxq>", "fedcba987654"),))
    text = parameters_text(p)
    assert text.split("\n")[0] == "a <zxq>, smiling <lora:a:0.6> <lora:b:-1>"
    assert 'Lora hashes: "a: 0123456789ab"' in text and 'TI hashes: "<zxq>: fedcba987654"' in text
    assert parse_parameters(text)["prompt"] == p.prompt and parse_parameters(text)["Seed"] == "3"
    assert parse_adapters(text) == {"loras": [("a", 0.6, "0123456789ab"), ("b", -1.0, "")],
                                    "embeddings": [("<zxq>", "fedcba987654")]}
    plain = GenerationParams("a <zxq>", "", 4, "ddim", 5.0, 0.0, 3, 32, 32)
    assert "hashes" not in parameters_text(plain) and "<lora:" not in parameters_text(plain)


def addnet_hash(path):
    """A1111's LoRA short hash, computed here independently: SHA-256 of the bytes after the safetensors header."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + n:]).hexdigest()[:12]


def random_lora(components, path):
    g = torch.Generator().manual_seed(9)
    layers = {("unet", name): LoraLayer(torch.randn(4, m.in_features, generator=g) * 0.3,
                                        torch.randn(m.out_features, 4, generator=g) * 0.3, 2.0)
              for name, m in target_modules(components.unet).items() if name.endswith(("to_q", "to_k", "to_v"))}
    return save_lora(layers, path, metadata=lora_metadata(rank=4, alpha=2.0))


@pytest.mark.slow  # ~15 s: a model folder, one generate run and the diffusers reference
def test_generate_records_them_and_gives_the_diffusers_image(tmp_path, capsys):
    from ldmkit.cli import main

    model = tmp_path / "model"
    assert main(["model", "init", "--preset", "tiny", str(model)]) == 0
    lora = random_lora(build_components("tiny", seed=0), tmp_path / "my_style.safetensors")
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    emb = save_embedding(vectors, tmp_path / "subject.safetensors", metadata=embedding_metadata(token="<zxq>"))
    prompt = "a photo of <zxq>"
    assert main(["generate", prompt, "--model", str(model), "--sampler", "ddim", "--steps", "4", "--guidance", "5",
                 "--seed", "3", "--lora", f"{lora}:0.6", "--embedding", str(emb), "--quiet",
                 "-o", str(tmp_path / "out")]) == 0
    assert "loaded as <zxq>" in capsys.readouterr().err
    (png,) = (tmp_path / "out").glob("*.png")
    text = Image.open(png).text["parameters"]
    assert text.split("\n")[0] == "a photo of <zxq> <lora:my_style:0.6>"
    fields = parse_parameters(text)
    assert fields["prompt"] == prompt
    emb_hash = hashlib.sha256(emb.read_bytes()).hexdigest()[:12]
    assert fields["Lora hashes"] == f"my_style: {addnet_hash(lora)}" and fields["TI hashes"] == f"<zxq>: {emb_hash}"
    assert parse_adapters(text) == {"loras": [("my_style", 0.6, addnet_hash(lora))], "embeddings": [("<zxq>", emb_hash)]}

    ref = diffusers.StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    ref.scheduler = diffusers.DDIMScheduler.from_config(ref.scheduler.config)
    ref.set_progress_bar_config(disable=True)
    ref.load_lora_weights(str(lora), adapter_name="a")
    ref.set_adapters(["a"], [0.6])
    ref.load_textual_inversion(str(emb), token="<zxq>")
    ours = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    image = ref(prompt, num_inference_steps=4, guidance_scale=5.0, height=ours.shape[0], width=ours.shape[1],
                generator=torch.Generator().manual_seed(3)).images[0]
    diff = np.abs(ours - np.asarray(image, dtype=np.int16)).max()
    print(f"generate --lora --embedding: max pixel difference to diffusers {diff}/255")
    assert diff <= 2


def test_ti_hashes_name_the_embeddings_in_one_quoted_field():
    used = (("<b>", "bbbbbbbbbbbb"), ("<c>", "cccccccccccc"))  # with_adapters keeps those the prompts use
    p = GenerationParams("x <b>y", "not <c>", 4, "ddim", 5.0, 0.0, 3, 32, 32, embeddings=used)
    assert 'TI hashes: "<b>: bbbbbbbbbbbb, <c>: cccccccccccc"' in parameters_text(p)
