"""Checkpoint safety: pickles, code in model folders, unknown classes, corrupted safetensors headers."""

import json
import os
import pickle
import shutil
import struct

import pytest
import torch

from ldmkit.errors import ModelFolderError, UnsafeFileError
from ldmkit.models import build_components, load_components, save_components
from ldmkit.models.safety import check_safetensors_header


class _WritesSentinel:
    """A pickle payload: unpickling it calls os.system, which creates the sentinel file."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("safe") / "model"
    save_components(build_components("tiny", seed=0), path)
    return path


def _copy(model, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(model, dst)
    return dst


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_malicious_pickle_never_runs(model, tmp_path, allow_pickle):
    m = _copy(model, tmp_path)
    sentinel = tmp_path / "PWNED"
    weights = m / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    with open(m / "unet" / "diffusion_pytorch_model.bin", "wb") as f:
        pickle.dump({"conv_in.weight": _WritesSentinel(sentinel)}, f)
    match = "holds objects other than tensors" if allow_pickle else r"pickle file.*--allow-pickle"
    with pytest.raises(UnsafeFileError, match=match):
        load_components(m, allow_pickle=allow_pickle)
    assert not sentinel.exists()


def test_plain_tensor_pickle_loads_only_with_opt_in(model, tmp_path):
    from safetensors.torch import load_file

    m = _copy(model, tmp_path)
    weights = m / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    weights.unlink()
    torch.save(state, m / "vae" / "diffusion_pytorch_model.bin")
    with pytest.raises(UnsafeFileError, match="diffusion_pytorch_model.bin"):
        load_components(m)
    loaded = load_components(m, allow_pickle=True)
    assert torch.equal(loaded.vae.state_dict()["encoder.conv_in.weight"], state["encoder.conv_in.weight"])


def test_python_file_in_folder_is_refused(model, tmp_path):
    m = _copy(model, tmp_path)
    (m / "unet" / "custom_unet.py").write_text("raise SystemExit('ran')\n")
    with pytest.raises(UnsafeFileError, match=r"custom_unet.py.*code files"):
        load_components(m)


def test_class_outside_allowlist_is_refused(model, tmp_path):
    m = _copy(model, tmp_path)
    index = json.loads((m / "model_index.json").read_text())
    index["unet"] = ["my_package", "EvilUNet"]
    (m / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UnsafeFileError, match=r"'unet' names \['my_package', 'EvilUNet'\].*diffusers.UNet2DConditionModel"):
        load_components(m)


def test_auto_map_is_refused(model, tmp_path):
    m = _copy(model, tmp_path)
    config = json.loads((m / "text_encoder" / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (m / "text_encoder" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeFileError, match="auto_map"):
        load_components(m)


def _rewrite_header(path, mutate):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    mutate(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def _first_tensor(header):
    return next(k for k in header if k != "__metadata__")


def _shape_lies(h):
    h[_first_tensor(h)]["shape"][0] += 1


def _out_of_file(h):
    t = h[_first_tensor(h)]
    size = t["data_offsets"][1] - t["data_offsets"][0]
    t["data_offsets"] = [10**9, 10**9 + size]


def _overlap(h):
    names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
    a, b = h[names[0]], h[names[1]]
    if a["dtype"] == b["dtype"] and a["shape"] == b["shape"]:
        b["data_offsets"] = list(a["data_offsets"])
    else:
        b.update(dtype=a["dtype"], shape=a["shape"], data_offsets=list(a["data_offsets"]))


@pytest.mark.parametrize(
    "mutate, message",
    [(_shape_lies, "needs .* bytes, offsets give"), (_out_of_file, "past the data area"), (_overlap, "overlap")],
)
def test_corrupted_safetensors_header_is_refused_before_loading(model, tmp_path, mutate, message):
    m = _copy(model, tmp_path)
    weights = m / "unet" / "diffusion_pytorch_model.safetensors"
    _rewrite_header(weights, mutate)
    with pytest.raises(ModelFolderError, match=f"diffusion_pytorch_model.safetensors: not a valid safetensors file: .*{message}"):
        load_components(m)


def test_header_length_and_json_checks(tmp_path):
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(ModelFolderError, match="header length 1099511627776 does not fit"):
        check_safetensors_header(huge)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(struct.pack("<Q", 4) + b"{no}")
    with pytest.raises(ModelFolderError, match="header is not JSON"):
        check_safetensors_header(garbage)
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"abc")
    with pytest.raises(ModelFolderError, match="shorter than the 8-byte header length"):
        check_safetensors_header(short)


def test_valid_files_pass_the_header_check(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "ok.safetensors"
    save_file({"a": torch.zeros(3, 2), "b": torch.ones(5, dtype=torch.float16), "empty": torch.zeros(0)}, str(path))
    header = check_safetensors_header(path)
    assert header["a"]["shape"] == [3, 2]
