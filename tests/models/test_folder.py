"""Model folders: what we save diffusers loads (and runs), what diffusers saves we load; weights equal."""

import json
import shutil

import pytest
import torch

from ldmkit.errors import ModelFolderError
from ldmkit.models import build_components, load_components, model_hash, save_components
from ldmkit.models.folder import check_layout


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module", params=["clip", "minilm"])
def saved(request, tmp_path_factory):
    c = build_components("tiny", seed=0, text_encoder=request.param)
    path = tmp_path_factory.mktemp(f"model-{request.param}") / "model"
    save_components(c, path)
    return c, path


def test_diffusers_loads_and_runs_what_we_save(saved):
    from diffusers import StableDiffusionPipeline

    c, path = saved
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["requires_safety_checker"] is False
    assert not list(path.rglob("*.bin")) and list(path.rglob("*.safetensors"))
    pipe = StableDiffusionPipeline.from_pretrained(path, local_files_only=True)
    _assert_same(c.unet, pipe.unet)
    _assert_same(c.vae, pipe.vae)
    _assert_same(c.text_encoder.model, pipe.text_encoder)
    out = pipe("a cat", num_inference_steps=2, height=32, width=32, output_type="np",
               generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    assert out.shape == (1, 32, 32, 3)
    prompts = ["a cat", "a dog in a hat"]
    torch.testing.assert_close(c.text_encoder.encode(prompts), pipe.encode_prompt(prompts, "cpu", 1, False)[0])


def test_we_load_what_we_save(saved):
    c, path = saved
    back = load_components(path)
    _assert_same(c.unet, back.unet)
    _assert_same(c.vae, back.vae)
    _assert_same(c.text_encoder.model, back.text_encoder.model)
    assert back.meta == c.meta and back.source == path
    assert back.scheduler_config["_class_name"] == c.scheduler_config["_class_name"]
    assert back.text_encoder.kind == c.text_encoder.kind and back.text_encoder.max_length == 77
    torch.testing.assert_close(back.text_encoder.encode(["x y"]), c.text_encoder.encode(["x y"]))


def test_we_load_what_diffusers_saves(saved, tmp_path):
    from diffusers import StableDiffusionPipeline

    c, path = saved
    pipe = StableDiffusionPipeline.from_pretrained(path, local_files_only=True)
    pipe.save_pretrained(tmp_path / "by-diffusers")
    back = load_components(tmp_path / "by-diffusers")
    _assert_same(c.unet, back.unet)
    _assert_same(c.text_encoder.model, back.text_encoder.model)
    assert back.meta == {}  # a foreign folder has no ldmkit.json
    for k, v in c.scheduler_config.items():
        if not k.startswith("_"):
            assert back.scheduler_config[k] == v, k


def test_hash_is_stable_and_tracks_weights(saved, tmp_path):
    c, path = saved
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    assert model_hash(path) == model_hash(copy)
    other = build_components("tiny", seed=1, text_encoder=c.text_encoder.kind)
    save_components(other, tmp_path / "other")
    assert model_hash(tmp_path / "other") != model_hash(path)


def test_save_refuses_a_non_empty_folder(saved, tmp_path):
    c, _ = saved
    (tmp_path / "keep.txt").write_text("user file")
    with pytest.raises(ModelFolderError, match="not an empty folder"):
        save_components(c, tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "user file"


@pytest.mark.parametrize(
    "remove, message",
    [
        ("model_index.json", "missing file .*model_index.json"),
        ("unet/config.json", "missing config .*unet/config.json"),
        ("scheduler", "has no scheduler/ folder"),
        ("vae/diffusion_pytorch_model.safetensors", "vae holds no weight file"),
    ],
)
def test_missing_parts_are_named(saved, tmp_path, remove, message):
    _, path = saved
    copy = tmp_path / "m"
    shutil.copytree(path, copy)
    target = copy / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelFolderError, match=message):
        load_components(copy)


def test_not_a_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_components(tmp_path / "absent")
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    with pytest.raises(ModelFolderError, match="single checkpoint file.*ldmkit model convert"):
        check_layout(f)
    with pytest.raises(ModelFolderError, match="not a valid safetensors file"):
        load_components(f)  # a file is read as a single-file checkpoint (tests/models/test_downloaded_layouts.py)


def test_optional_clip_folder_is_ignored(saved, tmp_path):
    _, path = saved
    copy = tmp_path / "m"
    shutil.copytree(path, copy)
    (copy / "clip").mkdir()
    (copy / "clip" / "notes.txt").write_text("dual encoder goes here later")
    load_components(copy)
