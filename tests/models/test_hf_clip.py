"""A transformers CLIPModel folder as ldmkit's dual encoder: the same embeddings as transformers computes, the
same preprocessing as CLIPImageProcessor, saving in the CLIPModel layout, tuning choices, and refusals."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit.errors import ModelFolderError, UsageError
from ldmkit.models.dual_encoder import load_dual_encoder
from ldmkit.models.hf_clip import OPENAI_MEAN, OPENAI_STD, HFClipDualEncoder, save_hf_clip

_spec = importlib.util.spec_from_file_location("hf_clip_fixtures", Path(__file__).with_name("hf_clip_fixtures.py"))
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

PROMPTS = ["a red square", "a blue circle on the left", "two green triangles"]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return fixtures.tiny_clip_folder(tmp_path_factory.mktemp("clip") / "tiny-clip")


def _reference_embeddings(folder: Path, pixels: torch.Tensor, prompts: list[str]):
    """transformers' own CLIPModel forward: normalised image_embeds and text_embeds."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    tok = CLIPTokenizer.from_pretrained(folder)(prompts, padding="max_length", max_length=77, return_tensors="pt")
    mean, std = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(input_ids=tok.input_ids, attention_mask=tok.attention_mask,
                    pixel_values=((pixels + 1) / 2 - mean) / std)
    scale = float(out.logits_per_image[0, 0] / (out.image_embeds[0] @ out.text_embeds[0]))
    return out.image_embeds, out.text_embeds, scale


def test_embeddings_and_temperature_equal_transformers_clip(clip_folder):
    dual = load_dual_encoder(clip_folder)
    assert isinstance(dual, HFClipDualEncoder)
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1  # the tower's own size
    image_ref, text_ref, scale_ref = _reference_embeddings(clip_folder, pixels, PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(dual.encode_images(pixels), image_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(dual.encode_texts(PROMPTS), text_ref, atol=1e-5, rtol=1e-5)
    assert float(dual.temperature_scale()) == pytest.approx(scale_ref, rel=1e-5)  # the kept logit_scale
    # the token states (what Stable Diffusion conditions on) come from the same text tower
    from transformers import CLIPTextModel, CLIPTokenizer

    reference = CLIPTextModel.from_pretrained(clip_folder, local_files_only=True).eval()
    ids = CLIPTokenizer.from_pretrained(clip_folder)(["a red square"], padding="max_length", max_length=77,
                                                     return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(dual.text_encoder.encode(["a red square"]), reference(ids).last_hidden_state)


def test_images_of_any_size_are_preprocessed_like_clip_image_processor(clip_folder):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    dual = load_dual_encoder(clip_folder)
    y, x = np.mgrid[0:60, 0:80]  # a smooth 80x60 image: resampling filters agree on it up to rounding
    array = np.stack([128 + 100 * np.sin(x / 9), 128 + 100 * np.cos(y / 7), 255 * x / 80], -1).astype(np.uint8)
    image = Image.fromarray(array)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    reference = processor(images=image, return_tensors="pt").pixel_values
    pixels = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 127.5 - 1
    ours = dual.preprocess(pixels)
    assert ours.shape == reference.shape == (1, 3, 32, 32)
    assert float((ours - reference).abs().max()) < 0.02  # PIL's and torch's bicubic differ by rounding only
    with torch.no_grad():
        theirs = dual.clip.visual_projection(dual.clip.vision_model(pixel_values=reference).pooler_output)
        cos = torch.nn.functional.cosine_similarity(dual.encode_images(pixels), theirs)
    assert float(cos[0]) > 0.999


def test_saved_result_loads_in_transformers_and_back(clip_folder, tmp_path):
    from transformers import CLIPModel

    dual = load_dual_encoder(clip_folder)
    with torch.no_grad():
        dual.clip.text_projection.weight.mul_(2)  # something to tell the saved copy from the original
    save_hf_clip(dual, tmp_path / "saved")
    again = CLIPModel.from_pretrained(tmp_path / "saved", local_files_only=True)
    for name, tensor in dual.clip.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor, atol=0, rtol=0)
    assert json.loads((tmp_path / "saved" / "preprocessor_config.json").read_text())["crop_size"]["height"] == 32
    back = load_dual_encoder(tmp_path / "saved")
    with torch.no_grad():
        torch.testing.assert_close(back.encode_texts(PROMPTS), dual.encode_texts(PROMPTS))


def test_tuning_whole_towers_or_only_their_last_layers(clip_folder):
    dual = load_dual_encoder(clip_folder)
    heads = sum(p.numel() for p in (dual.clip.text_projection.weight, dual.clip.visual_projection.weight)) + 1
    assert dual.set_tuning(tune_text=False, tune_image=False) == heads
    text = sum(p.numel() for p in dual.clip.text_model.parameters())
    assert dual.set_tuning(tune_text=True, tune_image=False) == heads + text
    assert dual.text_tuned
    last = dual.set_tuning(tune_text=True, tune_image=True, last_layers=1)
    trainable = {n for n, p in dual.named_parameters() if p.requires_grad}
    assert any(".encoder.layers.1." in n for n in trainable) and not any(".encoder.layers.0." in n for n in trainable)
    assert {"clip.text_model.final_layer_norm.weight", "clip.vision_model.post_layernorm.weight"} <= trainable
    assert "clip.text_model.embeddings.token_embedding.weight" not in trainable
    assert heads < last < dual.set_tuning(tune_text=True, tune_image=True)
    with pytest.raises(UsageError, match="more than the text tower's 2 layers"):
        dual.set_tuning(tune_text=True, tune_image=False, last_layers=3)


def test_a_run_folder_and_a_model_folder_with_a_clip_model_inside_load(clip_folder, tmp_path):
    import shutil

    shutil.copytree(clip_folder, tmp_path / "run" / "final" / "clip")
    assert isinstance(load_dual_encoder(tmp_path / "run"), HFClipDualEncoder)
    assert isinstance(load_dual_encoder(tmp_path / "run" / "final"), HFClipDualEncoder)


def test_folders_that_are_not_a_usable_clip_model_are_refused(clip_folder, tmp_path):
    import shutil

    from transformers import CLIPTextModel

    from ldmkit.models.hf_clip import load_hf_clip

    # a text tower alone cannot score images
    CLIPTextModel.from_pretrained(clip_folder, local_files_only=True).save_pretrained(tmp_path / "text")
    with pytest.raises(ModelFolderError, match="CLIP text model only"):
        load_dual_encoder(tmp_path / "text")
    # no tokenizer files
    (tmp_path / "notok").mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(clip_folder / name, tmp_path / "notok" / name)
    with pytest.raises(ModelFolderError, match="no tokenizer files"):
        load_hf_clip(tmp_path / "notok")
    # pickled weights only: refused, never unpickled (the file would fail to unpickle if it were read)
    shutil.copytree(clip_folder, tmp_path / "pickle")
    (tmp_path / "pickle" / "model.safetensors").unlink()
    (tmp_path / "pickle" / "pytorch_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(ModelFolderError, match="no model.safetensors"):
        load_hf_clip(tmp_path / "pickle")
    # a hub snapshot with a .bin twin beside model.safetensors loads from the safetensors file
    shutil.copytree(clip_folder, tmp_path / "twin")
    (tmp_path / "twin" / "pytorch_model.bin").write_bytes(b"not a pickle")
    assert isinstance(load_hf_clip(tmp_path / "twin"), HFClipDualEncoder)
    # weights that miss tensors of the config are not silently filled with random ones
    from safetensors.torch import load_file, save_file

    shutil.copytree(clip_folder, tmp_path / "partial")
    state = load_file(str(tmp_path / "partial" / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "visual_projection" not in k},
              str(tmp_path / "partial" / "model.safetensors"))
    with pytest.raises(ModelFolderError, match="lack 1 tensors"):
        load_hf_clip(tmp_path / "partial")


def test_best_of_reranks_with_a_clip_model(clip_folder):
    from ldmkit.models.presets import build_components
    from ldmkit.pipeline import Pipeline
    from ldmkit.pipeline.rerank import candidate_scores, rerank_best_of

    dual = load_dual_encoder(clip_folder)
    pipe = Pipeline(build_components("tiny", seed=0))
    best = rerank_best_of(pipe, dual, "a red square", 3, seed=5, steps=2)
    every = pipe("a red square", seed=5, num_images=3, steps=2)
    expected = candidate_scores(dual, "a red square", every.images)
    assert best.scores == pytest.approx(expected.tolist(), abs=1e-6)
    assert best.seeds == [5 + int(np.argmax(best.scores))]
