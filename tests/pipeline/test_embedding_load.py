"""Textual-inversion files on a pipeline, against diffusers' `load_textual_inversion` on tiny random SD-layout
components: the same image for a file ldmkit writes, every layout read, and the errors (issue 16)."""

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ldmkit.errors import UnsafeFileError, UsageError
from ldmkit.models.embeddings import embedding_metadata, file_hash, read_embedding, save_embedding
from ldmkit.models.presets import build_components
from ldmkit.pipeline import Pipeline
from ldmkit.pipeline.embedding import loaded_embeddings
from ldmkit.pipeline.output import parameters_text

PROMPT = "a photo of <zxq> on the left"


def random_vectors(n, dim=32, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))  # token embeddings have norm ~ sqrt(dim)


def diffusers_pipe(c):
    pipe = diffusers.StableDiffusionPipeline(
        vae=c.vae, text_encoder=c.text_encoder.model, tokenizer=c.text_encoder.tokenizer, unet=c.unet,
        scheduler=diffusers.DDIMScheduler.from_config(c.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def as_array(images):
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


@pytest.mark.parametrize("num_vectors", [1, 3])
def test_a_file_ldmkit_writes_gives_the_diffusers_image(tmp_path, num_vectors):
    path = save_embedding(random_vectors(num_vectors), tmp_path / "emb.safetensors",
                          metadata=embedding_metadata(token="<zxq>"))
    pipe = Pipeline(build_components("tiny", seed=0))
    base = pipe(PROMPT, sampler="ddim", steps=4, guidance=5.0, seed=3)  # "<zxq>" as plain CLIP text
    assert pipe.load_embedding(path) == "<zxq>"  # the token the file names
    ours = pipe(PROMPT, sampler="ddim", steps=4, guidance=5.0, seed=3)
    ref_pipe = diffusers_pipe(build_components("tiny", seed=0))
    ref_pipe.load_textual_inversion(str(path), token="<zxq>")
    ref = ref_pipe(PROMPT, num_inference_steps=4, guidance_scale=5.0, output_type="pil", height=ours.params.height,
                   width=ours.params.width, generator=torch.Generator().manual_seed(3)).images
    assert np.abs(as_array(ours.images) - as_array(base.images)).max() > 2  # the embedding changes the image
    diff = np.abs(as_array(ours.images) - as_array(ref)).max()
    print(f"{num_vectors} vector(s): max pixel difference to diffusers {diff}/255")
    assert diff <= 2
    assert ours.params.embeddings == (("<zxq>", file_hash(path)),)
    assert f'TI hashes: "<zxq>: {file_hash(path)}"' in parameters_text(ours.params)
    other = pipe("a red circle", sampler="ddim", steps=2).params
    assert "TI hashes" not in parameters_text(other)  # named only when a prompt uses it, as A1111 does
    # the tokenizer decides what a prompt uses: CLIP's lowercases, so <ZXQ> in the negative prompt uses <zxq>
    upper = pipe("a red circle", negative_prompt="a <ZXQ>", sampler="ddim", steps=2).params
    assert f'TI hashes: "<zxq>: {file_hash(path)}"' in parameters_text(upper) and other.embeddings == ()


def table_rows(pipe, token):
    ids = pipe.text_encoder.tokenizer.convert_tokens_to_ids([token])
    return pipe.text_encoder.model.get_input_embeddings().weight[ids]


def test_every_layout_is_read_and_the_token_defaults_to_the_files(tmp_path):
    v = random_vectors(1, seed=4)
    files = {
        "kohya": (tmp_path / "kohya-name.safetensors", {"emb_params": v}, {}),
        "a1111": (tmp_path / "a1111.safetensors", {"string_to_param.*": v}, {"name": "<a1111>"}),
        "diffusers": (tmp_path / "learned_embeds.safetensors", {"<cat-toy>": v[0]}, {}),
    }
    for path, tensors, meta in files.values():
        save_file(tensors, path, metadata=meta)
    pipe = Pipeline(build_components("tiny", seed=0))
    assert [pipe.load_embedding(p) for p, _, _ in files.values()] == ["kohya-name", "<a1111>", "<cat-toy>"]
    assert pipe.load_embedding(files["kohya"][0], "<mine>") == "<mine>"
    for token in ("kohya-name", "<a1111>", "<cat-toy>", "<mine>"):
        assert torch.equal(table_rows(pipe, token), v)
    assert read_embedding(files["a1111"][0]).layout == "string_to_param"


def test_errors_name_the_problem(tmp_path):
    pipe = Pipeline(build_components("tiny", seed=0))
    path = save_embedding(random_vectors(1), tmp_path / "e.safetensors", metadata=embedding_metadata(token="<e>"))
    pipe.load_embedding(path)
    with pytest.raises(UsageError, match="already in the tokenizer's vocabulary"):
        pipe.load_embedding(path)
    with pytest.raises(UsageError, match="already in the tokenizer's vocabulary"):
        pipe.load_embedding(path, "photo")  # a CLIP vocabulary entry (the prefix form of "photo</w>")
    wide = save_embedding(random_vectors(2, dim=48), tmp_path / "wide.safetensors")
    with pytest.raises(UsageError, match="48-dimensional.*32-dimensional"):
        pipe.load_embedding(wide)
    save_file({"a": random_vectors(1), "b": random_vectors(1)}, tmp_path / "two.safetensors")
    with pytest.raises(UsageError, match="2 tensors"):
        pipe.load_embedding(tmp_path / "two.safetensors")
    with pytest.raises(UsageError, match="no such embedding file"):
        pipe.load_embedding(tmp_path / "missing.safetensors")
    with pytest.raises(UsageError, match="one word"):
        pipe.load_embedding(path, "two words")


def test_pickles_are_refused_unless_allowed_and_then_tensors_only(tmp_path):
    pt = tmp_path / "a1111.pt"
    torch.save({"string_to_param": {"*": random_vectors(2)}, "name": "<pt>", "step": 100}, pt)
    pipe = Pipeline(build_components("tiny", seed=0))
    with pytest.raises(UnsafeFileError, match="pickle"):
        pipe.load_embedding(pt)
    assert pipe.load_embedding(pt, allow_pickle=True) == "<pt>"
    assert pipe.text_encoder.multi_vector["<pt>"] == ("<pt>", "<pt>_1")
    evil = tmp_path / "evil.bin"
    torch.save({"<x>": random_vectors(1), "obj": Image.new("RGB", (1, 1))}, evil)
    with pytest.raises(UnsafeFileError, match="other than tensors"):
        pipe.load_embedding(evil, allow_pickle=True)


def test_a_multi_vector_token_takes_its_positions(tmp_path):
    pipe = Pipeline(build_components("tiny", seed=0))
    text = pipe.text_encoder
    pipe.load_embedding(save_embedding(random_vectors(5), tmp_path / "five.safetensors"), "<v>")
    assert text.expand("a <v> b") == "a <v> <v>_1 <v>_2 <v>_3 <v>_4 b"
    n = text.max_length - 2 - 5  # BOS, EOS and the token's five positions
    assert text.dropped_tokens("word " * n + "<v>") == 0
    assert text.dropped_tokens("word " * (n + 1) + "<v>") == 1


def test_unload_restores_the_tokenizer_the_table_and_the_image(tmp_path):
    pipe = Pipeline(build_components("tiny", seed=0))
    text = pipe.text_encoder
    rows, vocab = text.model.get_input_embeddings().weight.shape[0], text.tokenizer.get_vocab()
    base_table = text.model.get_input_embeddings().weight.detach().clone()
    base = pipe(PROMPT, sampler="ddim", steps=3, guidance=5.0, seed=1)
    pipe.unload_embeddings()  # nothing loaded: nothing to do
    pipe.load_embedding(save_embedding(random_vectors(1, seed=2), tmp_path / "one.safetensors"), "<zxq>")
    pipe.load_embedding(save_embedding(random_vectors(3, seed=5), tmp_path / "three.safetensors"), "<v>")
    with_them = pipe(PROMPT + " <v>", sampler="ddim", steps=3, guidance=5.0, seed=1)
    assert text.model.get_input_embeddings().weight.shape[0] == rows + 4 and text.multi_vector
    pipe.unload_embeddings()
    assert text.tokenizer.get_vocab() == vocab and text.multi_vector == {}
    assert torch.equal(text.model.get_input_embeddings().weight, base_table)
    again = pipe(PROMPT, sampler="ddim", steps=3, guidance=5.0, seed=1)
    assert np.array_equal(as_array(again.images), as_array(base.images)) and again.params.embeddings == ()
    assert with_them.params.embeddings and not np.array_equal(as_array(with_them.images), as_array(base.images))
    # the same tokens load again after an unload, with new vectors
    pipe.load_embedding(save_embedding(random_vectors(1, seed=9), tmp_path / "other.safetensors"), "<zxq>")
    assert torch.equal(table_rows(pipe, "<zxq>"), random_vectors(1, seed=9))
    assert [e.token for e in loaded_embeddings(pipe)] == ["<zxq>"]
