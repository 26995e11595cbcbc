"""Stable Diffusion as a user downloads it (issue 12, point 3), with tiny stand-ins built here.

- A hub snapshot: `.bin` pickles beside `.safetensors`, fp16 variants, a safety checker: loads from the
  plain safetensors and never unpickles anything.
- A CompVis single-file `.safetensors`: `ldmkit generate --model FILE` (architecture inferred, or
  `--preset`) gives diffusers' image, and `ldmkit model convert FILE --out DIR` writes a folder that
  ldmkit and diffusers both load.
- Every `--flag` an error message suggests exists on the command that printed it.
- A folder's own scheduler is the default sampler.
"""

import importlib.util
import json
import pickle
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit.cli import build_parser, flag_hint, main
from ldmkit.errors import LdmkitError
from ldmkit.models import build_components, load_components, save_components

_spec = importlib.util.spec_from_file_location("single_file_helpers", Path(__file__).with_name("test_single_file.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
to_compvis = _helpers.to_compvis  # diffusers -> CompVis key names, written independently of diffusers


class _Payload:
    """A pickle that creates `marker` when unpickled by anything but a weights-only loader."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_trap(path: Path, marker: Path) -> None:
    with path.open("wb") as f:
        pickle.dump({"weight": _Payload(marker)}, f)


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _zeroed_fp16(src: Path, dst: Path) -> None:
    """A valid fp16 variant whose weights are all zero: loading it instead of the plain file would show."""
    from safetensors.torch import load_file, save_file

    save_file({k: torch.zeros_like(v, dtype=torch.float16) for k, v in load_file(src).items()}, str(dst))


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A tiny SD folder laid out as a hub snapshot: every component has a trap .bin and a zeroed fp16 variant."""
    root = tmp_path_factory.mktemp("snapshot")
    c = build_components("tiny", seed=0)
    path = root / "snapshot"
    save_components(c, path)
    (path / "ldmkit.json").unlink()  # a downloaded folder has none
    marker = root / "UNPICKLED"
    for sub, name, bin_name in (("unet", "diffusion_pytorch_model", "diffusion_pytorch_model"),
                                ("vae", "diffusion_pytorch_model", "diffusion_pytorch_model"),
                                ("text_encoder", "model", "pytorch_model")):
        _write_trap(path / sub / f"{bin_name}.bin", marker)
        _write_trap(path / sub / f"{bin_name}.fp16.bin", marker)
        _zeroed_fp16(path / sub / f"{name}.safetensors", path / sub / f"{name}.fp16.safetensors")
    (path / "safety_checker").mkdir()
    _write_trap(path / "safety_checker" / "pytorch_model.bin", marker)
    (path / "safety_checker" / "config.json").write_text('{"model_type": "clip"}')
    index = json.loads((path / "model_index.json").read_text())
    index.update(safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
                 feature_extractor=["transformers", "CLIPImageProcessor"], requires_safety_checker=True)
    (path / "model_index.json").write_text(json.dumps(index))
    return c, path, marker


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_bin_beside_safetensors_loads_the_safetensors_and_never_unpickles(snapshot, monkeypatch, allow_pickle):
    c, path, marker = snapshot

    def no_torch_load(*args, **kwargs):
        raise AssertionError(f"torch.load was called on {args[:1]}")

    monkeypatch.setattr(torch, "load", no_torch_load)
    loaded = load_components(path, allow_pickle=allow_pickle)
    assert not marker.exists()
    _assert_same(c.unet, loaded.unet)  # the plain safetensors, not the zeroed fp16 variant nor the .bin
    _assert_same(c.vae, loaded.vae)
    _assert_same(c.text_encoder.model, loaded.text_encoder.model)


def test_only_fp16_variant_safetensors_load_as_that_variant(snapshot, tmp_path):
    from safetensors.torch import save_file

    c, path, marker = snapshot
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "config.json").write_text((path / "unet" / "config.json").read_text())
    half = {k: v.half() for k, v in c.unet.state_dict().items()}
    save_file(half, str(unet / "diffusion_pytorch_model.fp16.safetensors"))
    _write_trap(unet / "diffusion_pytorch_model.fp16.bin", marker)
    from ldmkit.models.folder import _weights_kind

    assert _weights_kind(unet, allow_pickle=False) == (True, "fp16")
    from diffusers import UNet2DConditionModel

    loaded = UNet2DConditionModel.from_pretrained(unet, use_safetensors=True, variant="fp16")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v.half(), half[k]), k
    assert not marker.exists()


def test_generate_on_a_snapshot_defaults_to_its_own_scheduler(snapshot, tmp_path):
    _, path, marker = snapshot
    out = tmp_path / "out"
    assert main(["generate", "a red circle", "--model", str(path), "--steps", "2", "-o", str(out), "--quiet"]) == 0
    (png,) = out.glob("*.png")
    assert "Sampler: pndm" in Image.open(png).text["parameters"]  # PNDMScheduler in scheduler/, no ldmkit.json
    assert not marker.exists()


@pytest.mark.parametrize("scheduler, sampler", [("UniPCMultistepScheduler", "unipc"),
                                                ("EulerDiscreteScheduler", "euler"),
                                                ("DDIMScheduler", "ddim")])
def test_allowlisted_scheduler_classes_are_accepted_and_are_the_default(snapshot, tmp_path, scheduler, sampler):
    import shutil

    from ldmkit.pipeline import Pipeline

    _, path, _ = snapshot
    copy = tmp_path / "model"
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns("*.bin", "*.fp16.*", "safety_checker"))
    config_file = copy / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config["_class_name"] = scheduler
    config_file.write_text(json.dumps(config))
    index = json.loads((copy / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", scheduler]
    (copy / "model_index.json").write_text(json.dumps(index))
    pipe = Pipeline.from_pretrained(copy)
    assert pipe.defaults()["sampler"] == sampler


# --- single-file checkpoints -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single_file(tmp_path_factory):
    from safetensors.torch import save_file

    c = build_components("tiny", seed=3)
    path = tmp_path_factory.mktemp("compvis") / "tiny-sd.safetensors"
    save_file(to_compvis(c), str(path))
    return c, path


def _png_pixels(folder: Path) -> np.ndarray:
    (png,) = folder.glob("*.png")
    return np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)


def test_generate_with_a_single_file_gives_diffusers_image(single_file, tmp_path):
    import diffusers

    c, path = single_file
    out = tmp_path / "out"
    rc = main(["generate", "a red circle", "--model", str(path), "--steps", "4", "--seed", "7", "--guidance", "5",
               "-o", str(out), "--quiet"])
    assert rc == 0
    (png,) = out.glob("*.png")
    assert "Sampler: pndm" in Image.open(png).text["parameters"]  # sd-style preset: PNDM scheduler
    pipe = diffusers.StableDiffusionPipeline(
        vae=c.vae, text_encoder=c.text_encoder.model, tokenizer=c.text_encoder.tokenizer, unet=c.unet,
        scheduler=diffusers.PNDMScheduler.from_config(c.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a red circle", num_inference_steps=4, guidance_scale=5.0, height=32, width=32,
               generator=torch.Generator().manual_seed(7)).images[0]
    diff = np.abs(_png_pixels(out) - np.asarray(ref, dtype=np.int16)).max()
    assert diff <= 2, f"max pixel difference {diff}/255"
    # --preset naming the architecture gives the same image
    out2 = tmp_path / "out2"
    assert main(["generate", "a red circle", "--model", str(path), "--preset", "tiny", "--steps", "4", "--seed", "7",
                 "--guidance", "5", "-o", str(out2), "--quiet"]) == 0
    assert np.array_equal(_png_pixels(out), _png_pixels(out2))


@pytest.mark.slow  # ~10 s on 2 cores: diffusers' from_pretrained and three generate runs
def test_model_convert_writes_a_folder_ldmkit_and_diffusers_load(single_file, tmp_path, capsys):
    from diffusers import StableDiffusionPipeline

    c, path = single_file
    out = tmp_path / "converted"
    assert main(["model", "convert", str(path), "--out", str(out)]) == 0
    assert "tiny" in capsys.readouterr().out
    assert not list(out.rglob("*.bin")) and list(out.rglob("*.safetensors"))
    ours = load_components(out)
    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    for loaded in (ours, pipe):
        _assert_same(c.unet, loaded.unet)
        _assert_same(c.vae, loaded.vae)
    _assert_same(c.text_encoder.model, ours.text_encoder.model)
    _assert_same(c.text_encoder.model, pipe.text_encoder)
    assert ours.meta["converted_from"] == path.name and ours.meta["preset"] == "tiny"
    # the folder and the file generate the same image
    a, b = tmp_path / "a", tmp_path / "b"
    for model, folder in ((path, a), (out, b)):
        assert main(["generate", "x", "--model", str(model), "--steps", "2", "-o", str(folder), "--quiet"]) == 0
    assert np.array_equal(_png_pixels(a), _png_pixels(b))
    # an existing --out is refused before any work, and left as it was
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(["model", "convert", str(path), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["model", "convert", str(path), "--out", str(empty)]) == 2


def test_preset_is_refused_for_a_folder_and_needed_when_shapes_do_not_tell(single_file, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    _, path = single_file
    assert main(["generate", "x", "--model", str(tmp_path), "--preset", "tiny", "-o", str(tmp_path / "o")]) == 2
    assert "--preset names the architecture of a single checkpoint file" in capsys.readouterr().err
    state = load_file(path)
    del state["model.diffusion_model.input_blocks.0.0.weight"]
    broken = tmp_path / "no-conv-in.safetensors"
    save_file(state, str(broken))
    assert main(["generate", "x", "--model", str(broken), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the architecture" in err and "name it with --preset (tiny, sd15, sd21)" in err


# --- every suggested flag exists on the command that suggests it ------------------------------------------

_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _subparser(argv: list[str]):
    """The argparse parser of the (sub)command that `argv` starts with."""
    parser = build_parser()
    for word in argv:
        actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not actions or word not in actions[0].choices:
            break
        parser = actions[0].choices[word]
    return parser


def _options(argv: list[str]) -> set[str]:
    return {s for a in _subparser(argv)._actions for s in a.option_strings}


def assert_flags_exist(argv: list[str], message: str) -> None:
    """Every --flag in `message` exists: inside a quoted `ldmkit CMD ...` on CMD, elsewhere on argv's command."""
    for quoted in re.findall(r"`ldmkit ([^`]*)`", message):
        words = shlex.split(quoted)
        missing = set(_FLAG.findall(quoted)) - _options(words)
        assert not missing, f"`ldmkit {quoted}` names {missing}, which `ldmkit {words[0]}` lacks"
    rest = re.sub(r"`[^`]*`", "", message)
    missing = set(_FLAG.findall(rest)) - _options(argv)
    assert not missing, f"`ldmkit {' '.join(argv[:2])}` suggests {missing}, which it lacks: {message}"


@pytest.fixture(scope="module")
def pickle_only(tmp_path_factory):
    """A model folder whose weights are .bin pickles only (what older diffusers versions wrote)."""
    c = build_components("tiny", seed=1)
    path = tmp_path_factory.mktemp("pickles") / "model"
    save_components(c, path)
    for sub in ("unet", "vae"):
        c_sub = getattr(c, sub)
        (path / sub / "diffusion_pytorch_model.safetensors").unlink()
        torch.save(c_sub.state_dict(), path / sub / "diffusion_pytorch_model.bin")
    (path / "text_encoder" / "model.safetensors").unlink()
    torch.save(c.text_encoder.model.state_dict(), path / "text_encoder" / "pytorch_model.bin")
    return c, path


# Each command that loads a model, and an argv prefix that reaches the model loader.
COMMANDS = {
    "generate": ["generate", "x"],
    "model info": ["model", "info"],
    "model convert": ["model", "convert"],
    "model ship": ["model", "ship"],
    "eval": ["eval"],
    "train unet": ["train", "unet"],
    "train vae": ["train", "vae"],
    "train clip": ["train", "clip"],
    "train recipe": ["train", "recipe"],
}


def _errors(pickle_folder: Path, single: Path, tmp: Path) -> list[LdmkitError]:
    """One instance of every hint-bearing model-loading error."""
    from safetensors.torch import load_file, save_file

    from ldmkit.models.folder import check_layout

    errors = []
    for call in (lambda: load_components(pickle_folder),
                 lambda: check_layout(single),
                 lambda: load_components(single, preset="sd15")):
        with pytest.raises(LdmkitError) as info:
            call()
        errors.append(info.value)
    state = load_file(single)
    del state["model.diffusion_model.input_blocks.0.0.weight"]
    save_file(state, str(tmp / "unknown.safetensors"))
    with pytest.raises(LdmkitError) as info:
        load_components(tmp / "unknown.safetensors")
    errors.append(info.value)
    return errors


def test_every_flag_an_error_suggests_exists_on_that_command(pickle_only, single_file, tmp_path):
    _, folder = pickle_only
    _, single = single_file
    errors = _errors(folder, single, tmp_path)
    assert [bool(getattr(e, "flag_hint", None)) for e in errors] == [True, False, True, True]
    for argv in COMMANDS.values():
        args = build_parser().parse_args(_complete(argv, tmp_path))
        for err in errors:
            assert_flags_exist(argv, f"{err}{flag_hint(err, args)}")


def _complete(argv: list[str], tmp: Path) -> list[str]:
    """argv plus the required arguments, so that the command's parser accepts it."""
    if argv[0] == "generate":
        return argv
    if argv[0] == "eval":
        return argv + [str(tmp), "--data", str(tmp), "-o", str(tmp / "o")]
    if argv[:2] == ["model", "info"]:
        return argv + [str(tmp)]
    if argv[0] == "model" or argv[:2] == ["train", "recipe"]:
        return argv + [str(tmp), "--out", str(tmp / "o")]
    return argv + ["--config", str(tmp / "c.yaml"), "--out", str(tmp / "o")]


def test_the_hint_is_shown_only_where_the_flag_exists(pickle_only, tmp_path, capsys):
    _, folder = pickle_only
    assert main(["generate", "x", "--model", str(folder), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "pass --allow-pickle to this command" in err and "Traceback" not in err
    assert_flags_exist(["generate"], err)
    assert main(["model", "info", str(folder)]) == 2
    assert "pass --allow-pickle to this command" in capsys.readouterr().err
    args = build_parser().parse_args(_complete(["train", "unet"], tmp_path))
    with pytest.raises(LdmkitError) as info:
        load_components(folder)
    assert "--allow-pickle to this command" not in f"{info.value}{flag_hint(info.value, args)}"
    # the convert command the message names works and yields a folder that loads without pickles
    out = tmp_path / "safe"
    assert main(["model", "convert", str(folder), "--allow-pickle", "--out", str(out)]) == 0
    c, _ = pickle_only
    _assert_same(c.unet, load_components(out).unet)
