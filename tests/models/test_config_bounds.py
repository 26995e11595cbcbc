"""Model-folder configs are bounded before any module is built (issue 13, "model folders").

A config asking for 160 GB is refused in well under a second, under a memory limit that an actual
allocation would exceed; every size field names itself; the parameter estimate agrees with the real
module's count; SD-XL-size UNets still pass; the custom-code check covers JSON files of any size.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ldmkit.errors import ModelFolderError, UnsafeFileError
from ldmkit.models import build_components, load_components, save_components
from ldmkit.models import config_bounds as B
from ldmkit.models.presets import PRESETS

# SD-XL base's UNet (diffusers config); 2,567,463,684 parameters when built with diffusers 0.42.
SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                 block_out_channels=[320, 640, 1280], transformer_layers_per_block=[1, 2, 10],
                 attention_head_dim=[5, 10, 20], cross_attention_dim=2048, use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816)
SDXL_UNET_PARAMS = 2_567_463_684
# Within every per-field bound, yet about 40B parameters: 160 GB as float32.
HUGE_UNET = {**PRESETS["sd15"].unet, "block_out_channels": [2560, 5120, 5120, 5120], "cross_attention_dim": 4096,
             "transformer_layers_per_block": 4}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("bounds") / "tiny"
    save_components(build_components("tiny", seed=0), path)
    return path


def _with_config(src: Path, dst: Path, component: str, **changes) -> Path:
    shutil.copytree(src, dst)
    file = dst / component / ("scheduler_config.json" if component == "scheduler" else "config.json")
    config = json.loads(file.read_text())
    config.update(changes)
    file.write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize("component, field, value", [
    ("unet", "block_out_channels", [32, 100_000]),
    ("unet", "layers_per_block", 10_000),
    ("unet", "attention_head_dim", 1_000_000),
    ("unet", "cross_attention_dim", 10**9),
    ("unet", "sample_size", 100_000),
    ("unet", "in_channels", 0),
    ("unet", "transformer_layers_per_block", [1, 5000]),
    ("unet", "norm_num_groups", True),
    ("vae", "block_out_channels", [32, 64000]),
    ("vae", "latent_channels", 100_000),
    ("vae", "layers_per_block", 1000),
    ("text_encoder", "hidden_size", 1_000_000),
    ("text_encoder", "num_hidden_layers", 100_000),
    ("text_encoder", "vocab_size", 10**10),
    ("text_encoder", "max_position_embeddings", 10**8),
    ("scheduler", "num_train_timesteps", 10**9),
])  # fmt: skip
def test_each_size_field_is_bounded_and_named(tiny_folder, tmp_path, component, field, value):
    path = _with_config(tiny_folder, tmp_path / "m", component, **{field: value})
    with pytest.raises(ModelFolderError, match=rf"{component}/\w+\.json: {field}\b") as info:
        load_components(path)
    assert "\n" not in str(info.value)


def test_inconsistent_configs_are_refused_before_building(tiny_folder, tmp_path):
    bad = _with_config(tiny_folder, tmp_path / "groups", "unet", norm_num_groups=24)
    with pytest.raises(ModelFolderError, match="norm_num_groups 24 does not divide block_out_channels 32"):
        load_components(bad)
    bad = _with_config(tiny_folder, tmp_path / "types", "unet", down_block_types=["DownBlock2D"])
    with pytest.raises(ModelFolderError, match="down_block_types must list one block type per"):
        load_components(bad)
    bad = _with_config(tiny_folder, tmp_path / "heads", "text_encoder", num_attention_heads=3)
    with pytest.raises(ModelFolderError, match="num_attention_heads 3 does not divide hidden_size 32"):
        load_components(bad)
    bad = _with_config(tiny_folder, tmp_path / "betas", "scheduler", trained_betas=[0.1] * 7)
    with pytest.raises(ModelFolderError, match="trained_betas must be a list of num_train_timesteps"):
        load_components(bad)


def test_parameter_estimates_match_the_built_modules():
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    def count(build):
        with torch.device("meta"):
            return sum(p.numel() for p in build().parameters())

    for name in ("tiny", "small64"):
        p = PRESETS[name]
        cases = [(B.estimate_unet_params(Path("u"), dict(p.unet)), count(lambda: UNet2DConditionModel(**p.unet))),
                 (B.estimate_vae_params(Path("v"), dict(p.vae)), count(lambda: AutoencoderKL(**p.vae))),
                 (B.estimate_text_params(p.clip_text_config),
                  count(lambda: CLIPTextModel(CLIPTextConfig(**p.clip_text_config))))]
        for estimate, real in cases:
            assert abs(estimate / real - 1) < 0.10, (name, estimate, real)
    assert abs(B.estimate_unet_params(Path("u"), SDXL_UNET) / SDXL_UNET_PARAMS - 1) < 0.02


def test_sdxl_size_unet_passes_and_the_limit_is_overridable(monkeypatch):
    assert B.check_unet_config(Path("sdxl/unet/config.json"), SDXL_UNET) > 2.5e9
    assert B.estimate_unet_params(Path("u"), HUGE_UNET) * 4 > 150e9
    with pytest.raises(ModelFolderError, match=r"about 39\.8B parameters \(159 GB as float32\).*LDMKIT_MAX_PARAMS"):
        B.check_unet_config(Path("huge/unet/config.json"), HUGE_UNET)
    monkeypatch.setenv(B.MAX_PARAMS_ENV, str(50 * 10**9))
    B.check_unet_config(Path("huge/unet/config.json"), HUGE_UNET)  # a user who really has such a model
    monkeypatch.setenv(B.MAX_PARAMS_ENV, "1000")
    with pytest.raises(ModelFolderError, match="above the limit"):
        B.check_unet_config(Path("sdxl/unet/config.json"), SDXL_UNET)
    monkeypatch.setenv(B.MAX_PARAMS_ENV, "lots")
    with pytest.raises(ModelFolderError, match="LDMKIT_MAX_PARAMS='lots' is not an integer"):
        B.max_params()


_UNDER_LIMIT = textwrap.dedent("""
    import resource, sys, time
    limit = 3 * 1024**3  # an actual 160 GB allocation cannot succeed under this
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from ldmkit.errors import ModelFolderError
    from ldmkit.models.folder import load_components
    t = time.perf_counter()
    try:
        load_components(sys.argv[1])
    except ModelFolderError as err:
        print(f"{time.perf_counter() - t:.4f}", err, sep="\\n")
    else:
        print("loaded")
""")


@pytest.mark.parametrize("changes, expect", [(HUGE_UNET, "about 39.8B parameters (159 GB as float32)"),
                                             ({"block_out_channels": [32, 2_000_000]}, "block_out_channels = ")],
                         ids=["160GB", "huge-field"])
def test_a_160_gb_config_is_refused_in_milliseconds_under_a_memory_limit(tiny_folder, tmp_path, changes, expect):
    path = _with_config(tiny_folder, tmp_path / "huge", "unet", **changes)
    proc = subprocess.run([sys.executable, "-c", _UNDER_LIMIT, str(path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds, message = proc.stdout.strip().split("\n")
    assert float(seconds) < 1.0
    assert "unet/config.json" in message and expect in message, message


def test_the_cli_refuses_it_with_one_line(tiny_folder, tmp_path):
    path = _with_config(tiny_folder, tmp_path / "huge", "unet", **HUGE_UNET)
    proc = subprocess.run([sys.executable, "-m", "ldmkit", "model", "info", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ldmkit: error: ") and "39.8B parameters" in lines[0], lines
    assert "Traceback" not in proc.stderr


def _big_json(path: Path, extra: dict) -> None:
    vocab = {f"tok{i:07d}</w>": i for i in range(80_000)}  # about 1.6 MB, like CLIP's tokenizer files
    path.write_text(json.dumps({**extra, "model": {"vocab": vocab}}))
    assert path.stat().st_size > 1_000_000


def test_custom_code_keys_are_found_in_json_files_of_any_size(tiny_folder, tmp_path):
    ok = tmp_path / "ok"
    shutil.copytree(tiny_folder, ok)
    _big_json(ok / "tokenizer" / "tokenizer_extra.json", {})
    load_components(ok)  # a large vocabulary alone is fine
    bad = tmp_path / "bad"
    shutil.copytree(tiny_folder, bad)
    _big_json(bad / "tokenizer" / "tokenizer_extra.json", {"auto_map": {"AutoTokenizer": "evil.Tokenizer"}})
    with pytest.raises(UnsafeFileError, match="tokenizer_extra.json asks for custom code \\(auto_map\\)"):
        load_components(bad)


def test_an_oversized_config_file_is_not_read(tiny_folder, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(tiny_folder, path)
    with (path / "vae" / "config.json").open("a") as f:
        f.write(" " * 17_000_000)
    with pytest.raises(ModelFolderError, match="too large for a config"):
        load_components(path)
