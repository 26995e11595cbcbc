"""LoRA files in the formats the ecosystem exchanges: read, check, resolve against a model (writing and merging:
ldmkit.models.lora_write).

Formats (issue 16):
- kohya / A1111 / ComfyUI: `lora_unet_<module_path_with_underscores>.lora_down.weight` / `.lora_up.weight` /
  `.alpha`, `lora_te_...` for the text encoder; conv layers (incl. 3x3 "LoCon") have 4-D weights.
- PEFT as diffusers saves it: `unet.<module.path>.lora_A.weight` / `.lora_B.weight` (alpha from the JSON in the
  `lora_adapter_metadata` header entry, else alpha = rank).
- diffusers' older format: `unet.<module.path>.lora.down.weight` (`lora_linear_layer`, `processor.to_q_lora`).

A layer adds `scale * alpha / rank * up @ down` to the module's weight (Hu et al. 2021, eq. 3; the alpha/rank
factor is kohya's and peft's). A missing alpha means alpha = rank, diffusers' rule, said in a warning. Only
safetensors files are read; shapes, ranks and sizes are checked from the header before any tensor is loaded.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldmkit.errors import UnsafeFileError, UsageError, shown
from ldmkit.models.safety import PICKLE_SUFFIXES, check_safetensors_header

PARTS = ("unet", "text_encoder")
"""The model parts a LoRA file can target, named as in the diffusers pipeline (and its PEFT key prefixes)."""
KOHYA_PREFIX = {"unet": "lora_unet", "text_encoder": "lora_te", "text_encoder_2": "lora_te2"}
MAX_FILE_BYTES = 4 * 2**30  # the largest SD/SDXL LoRA files in circulation are under 2 GiB
MAX_RANK = 1024
MAX_LAYERS = 10_000  # SD-XL with every Linear and conv targeted has ~2,500
MAX_METADATA_CHARS = 1_000_000
MAX_SCALE = 1000.0
ALPHA_FOLDED = "ldmkit_alpha_folded"  # metadata of PEFT files ldmkit writes: alpha / rank is inside lora_B
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
UNSUPPORTED = {  # key pattern -> what it is (LyCORIS and friends: a different parametrisation, not plain LoRA)
    r"\.lora_mid\.": "LyCORIS LoCon/Tucker (lora_mid)", r"\.hada_": "LyCORIS LoHa (hada_*)",
    r"\.lokr_": "LyCORIS LoKr (lokr_*)", r"\.dora_scale$": "DoRA (dora_scale)",
    r"lora_magnitude_vector": "DoRA (lora_magnitude_vector)", r"\.oft_": "OFT/BOFT (oft_*)",
    r"\.diff(_b)?$": "LyCORIS full weight difference (.diff)",
}  # fmt: skip

_KOHYA = re.compile(r"^(lora_unet|lora_te\d?)_(.+)\.(lora_down\.weight|lora_up\.weight|alpha)$")
_PEFT = re.compile(r"^(?:(unet|text_encoder(?:_2)?)\.)?(?:base_model\.model\.)?(.+)\.(lora_A|lora_B)(?:\.default)?\.weight$")
_DIFFUSERS = re.compile(r"^(unet|text_encoder(?:_2)?)\.(.+?)(?:\.lora|\.lora_linear_layer|_lora)\.(down|up)\.weight$")
_KIND = re.compile(r"(to_q|to_k|to_v|to_out_0|proj_in|proj_out|ff_net_0_proj|ff_net_2|conv1|conv2|conv_shortcut|"
                   r"time_emb_proj|conv|q_proj|k_proj|v_proj|out_proj|fc1|fc2|query|key|value|dense)$")
_TE_PART = {"lora_te": "text_encoder", "lora_te1": "text_encoder", "lora_te2": "text_encoder_2"}


def flat_name(name: str) -> str:
    """A module path as kohya spells it: dots become underscores (`attn1.to_q` -> `attn1_to_q`)."""
    return name.replace(".", "_")


@dataclass
class LoraLayer:
    """One low-rank update `alpha / rank * up @ down` of a Linear or Conv2d weight."""

    down: Any
    """torch tensor [rank, in] (Linear) or [rank, in, kh, kw] (Conv2d): applied first, like the module itself."""
    up: Any
    """torch tensor [out, rank] or [out, rank, 1, 1]."""
    alpha: float
    """kohya's / peft's alpha: the update is scaled by alpha / rank (alpha = rank: no scaling)."""

    def __post_init__(self) -> None:
        d, u = tuple(self.down.shape), tuple(self.up.shape)
        if len(d) not in (2, 4) or len(u) != len(d) or u[1] != d[0] or (len(u) == 4 and u[2:] != (1, 1)):
            raise ValueError(f"LoraLayer: down {list(d)} and up {list(u)} are not a rank-r pair")
        if not 1 <= d[0] <= MAX_RANK:
            raise ValueError(f"LoraLayer: rank {d[0]} outside 1..{MAX_RANK}")
        if not math.isfinite(self.alpha):
            raise ValueError(f"LoraLayer: alpha {self.alpha} is not finite")
        self.alpha = float(self.alpha)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self, dtype: Any = None) -> Any:
        """alpha / rank * up @ down, shaped like the target weight ([out, in] or [out, in, kh, kw])."""
        import torch

        dtype = dtype or torch.float32
        down, up = self.down.to(dtype), self.up.to(dtype)
        w = up.flatten(1) @ down.flatten(1)
        return (w * self.scale).reshape(up.shape[0], *down.shape[1:])


@dataclass
class LoraFile:
    """The layers of one LoRA file, keyed by (part, module name as the file spells it), plus its metadata."""

    layers: dict[tuple[str, str], LoraLayer]
    """(part, name) -> layer; part is "unet" or "text_encoder"; kohya names are flat (underscores), others dotted."""
    metadata: dict[str, str] = field(default_factory=dict)
    """The safetensors header's string metadata (kohya's ss_*, ldmkit's ldmkit_*, diffusers' adapter config)."""
    format: str = "kohya"
    """"kohya", "peft" or "diffusers": how the file spelled its keys."""
    warnings: list[str] = field(default_factory=list)
    """What the reader assumed (e.g. missing alphas), for the caller to show."""
    source: str = ""
    """The file it was read from ("" when built in memory), for messages."""

    def __post_init__(self) -> None:
        if self.format not in ("kohya", "peft", "diffusers"):
            raise ValueError(f"LoraFile.format must be kohya, peft or diffusers, got {self.format!r}")
        if len(self.layers) > MAX_LAYERS:
            raise ValueError(f"LoraFile: {len(self.layers)} layers, more than {MAX_LAYERS}")
        for part, _ in self.layers:
            if not isinstance(part, str) or not part:
                raise ValueError(f"LoraFile: bad part {part!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise ValueError("LoraFile.metadata must map strings to strings (the safetensors rule)")


def parse_lora_arg(text: str) -> tuple[str, float]:
    """`FILE[:SCALE]` -> (FILE, SCALE); a colon whose tail is not a number belongs to the file name."""
    head, sep, tail = text.rpartition(":")
    try:
        scale = float(tail) if sep and head else None
    except ValueError:
        scale = None
    return (text, 1.0) if scale is None else (head, check_scale(scale, text))


def check_scale(scale: float, what: str = "LoRA") -> float:
    """A LoRA scale: finite and within +-MAX_SCALE (negative scales are allowed: they subtract the update)."""
    if not isinstance(scale, (int, float)) or not abs(scale) <= MAX_SCALE:  # also rejects nan
        raise UsageError(f"{what}: scale {scale!r} outside -{MAX_SCALE:g}..{MAX_SCALE:g}")
    return float(scale)


# -- reading ---------------------------------------------------------------------------------------------------


def check_lora_path(path: str | Path) -> Path:
    """The path of a LoRA file ldmkit may read: an existing .safetensors file within the size bound."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeFileError(f"{path}: LoRA files are read from .safetensors only; {path.suffix} files are pickles, "
                              "which can run code when loaded, and ldmkit never loads them")
    if not path.is_file():
        raise UsageError(f"{path}: no such LoRA file")
    if path.suffix.lower() != ".safetensors":
        raise UsageError(f"{path}: a LoRA file must be .safetensors (kohya, PEFT or diffusers layout)")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UsageError(f"{path}: {size} bytes, larger than a LoRA file can be ({MAX_FILE_BYTES} bytes)")
    return path


def _parse_key(key: str) -> tuple[str, str, str, str]:
    """(format, part, module name, role in down/up/alpha) of one tensor name; UsageError for any other key."""
    for pattern, what in UNSUPPORTED.items():
        if re.search(pattern, key):
            raise UsageError(f"key {shown(key)} is {what}, which ldmkit does not support; it reads plain LoRA "
                             "(lora_down/lora_up, lora_A/lora_B, lora.down/lora.up)")
    m = _KOHYA.match(key)
    if m:
        part = "unet" if m[1] == "lora_unet" else _TE_PART.get(m[1], m[1])
        return "kohya", part, m[2], {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}[m[3]]
    m = _PEFT.match(key)
    if m:
        return "peft", m[1] or "unet", m[2], "down" if m[3] == "lora_A" else "up"
    m = _DIFFUSERS.match(key)
    if m:
        name = m[2].replace(".processor", "")
        name = name[: -len("to_out")] + "to_out.0" if name.endswith("to_out") else name
        return "diffusers", m[1], name, m[3]
    raise UsageError(f"key {shown(key)} is not a LoRA key ldmkit knows (kohya lora_unet_*/lora_te_*, "
                     "PEFT *.lora_A/B.weight, diffusers *.lora.down/up.weight)")


def _peft_alphas(metadata: dict[str, str]) -> dict[str, Any]:
    """part -> the LoraConfig dict diffusers stored under `lora_adapter_metadata` (alpha source for PEFT files)."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        flat = json.loads(raw)
    except json.JSONDecodeError:
        raise UsageError("lora_adapter_metadata in the file header is not JSON") from None
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items() if isinstance(flat, dict) else ():
        part, _, name = key.partition(".")
        out.setdefault(part, {})[name] = value
    for part, cfg in out.items():
        if cfg.get("use_rslora") or cfg.get("use_dora"):
            raise UsageError(f"{part}: rsLoRA/DoRA adapters are not supported (lora_adapter_metadata)")
    return out


def _peft_alpha(cfg: dict[str, Any], name: str) -> float | None:
    for pattern, alpha in (cfg.get("alpha_pattern") or {}).items():
        if re.fullmatch(rf"(.*\.)?{pattern}", name):
            return float(alpha)
    return float(cfg["lora_alpha"]) if "lora_alpha" in cfg else None


def read_lora(path: str | Path) -> LoraFile:
    """Read a LoRA .safetensors file in any supported layout; shapes are checked from the header first."""
    from safetensors import safe_open

    path = check_lora_path(path)
    header = check_safetensors_header(path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or sum(len(str(k)) + len(str(v)) for k, v in metadata.items()) > MAX_METADATA_CHARS:
        raise UsageError(f"{path}: header metadata is not a small string map")
    if len(header) > 3 * MAX_LAYERS:
        raise UsageError(f"{path}: {len(header)} tensors, more than a LoRA file holds (at most {MAX_LAYERS} layers)")
    if not header:
        raise UsageError(f"{path}: holds no tensors")
    groups: dict[tuple[str, str], dict[str, str]] = {}
    formats = set()
    for key, info in header.items():
        fmt, part, name, role = _parse_key(key)
        formats.add(fmt)
        if info["dtype"] not in FLOAT_DTYPES:
            raise UsageError(f"{path}: {shown(key)} has dtype {info['dtype']}, expected a float type")
        groups.setdefault((part, name), {})[role] = key
    if len(formats) > 1:
        raise UsageError(f"{path}: mixes key layouts ({', '.join(sorted(formats))}); expected one")
    fmt = formats.pop()
    for (part, name), roles in groups.items():
        missing = {"down", "up"} - roles.keys()
        if missing:
            raise UsageError(f"{path}: {shown(next(iter(roles.values())))} has no matching {'/'.join(missing)} weight")
        d, u = header[roles["down"]]["shape"], header[roles["up"]]["shape"]
        if len(d) not in (2, 4) or len(u) != len(d) or u[1] != d[0] or not 1 <= d[0] <= MAX_RANK:
            raise UsageError(f"{path}: {shown(roles['down'])} {d} and its up weight {u} are not a LoRA pair of rank "
                             f"1..{MAX_RANK}")
        if "alpha" in roles and math.prod(header[roles["alpha"]]["shape"]) != 1:
            raise UsageError(f"{path}: {shown(roles['alpha'])} is not a single number")
    peft_cfg = _peft_alphas(metadata) if fmt == "peft" else {}
    layers: dict[tuple[str, str], LoraLayer] = {}
    no_alpha = 0
    with safe_open(str(path), framework="pt") as f:
        for (part, name), roles in groups.items():
            down, up = f.get_tensor(roles["down"]), f.get_tensor(roles["up"])
            if "alpha" in roles:
                alpha = float(f.get_tensor(roles["alpha"]).float().item())
            else:
                alpha = _peft_alpha(peft_cfg.get(part, {}), name) if peft_cfg else None
            if alpha is None:
                alpha, no_alpha = float(down.shape[0]), no_alpha + 1
            if not math.isfinite(alpha):
                raise UsageError(f"{path}: alpha of {shown(name)} is not finite")
            layers[(part, name)] = LoraLayer(down, up, alpha)
    warnings = []
    if no_alpha and metadata.get(ALPHA_FOLDED) != "1":
        warnings.append(f"{path.name}: {no_alpha} of {len(layers)} layers have no alpha; treated as alpha = rank "
                        "(diffusers' rule)")
    return LoraFile(layers, {str(k): str(v) for k, v in metadata.items()}, fmt, warnings, str(path))


# -- resolving against a model -----------------------------------------------------------------------------------


def target_modules(model: Any) -> dict[str, Any]:
    """name -> module for every Linear and Conv2d of a model (the modules a LoRA can target)."""
    import torch

    return {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}


def resolve(lora: LoraFile, models: dict[str, Any]) -> dict[tuple[str, str], LoraLayer]:
    """(part, dotted module name) -> layer with shapes fitted to the module (1x1 conv <-> Linear); a layer naming
    a part or module the model lacks, or with the wrong shape, is an error naming its key."""
    import torch

    out: dict[tuple[str, str], LoraLayer] = {}
    tables: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
    for (part, name), layer in lora.layers.items():
        where = f"{lora.source or 'LoRA'}: {file_key(lora.format, part, name)}"
        if part not in models or models[part] is None:
            raise UsageError(f"{where} targets {part}, which this model does not have")
        if part not in tables:
            modules = target_modules(models[part])
            flat: dict[str, str] = {}
            for n in modules:
                flat[flat_name(n)] = n if flat_name(n) not in flat else ""  # "" marks an ambiguous flat name
            tables[part] = modules, flat
        modules, flat = tables[part]
        dotted = name if name in modules else flat.get(flat_name(name))
        if not dotted and part.startswith("text_encoder"):  # transformers 5 flattened CLIPTextModel.text_model
            bare = re.sub(r"^text_model[._]", "", name)
            dotted = bare if bare in modules else flat.get(flat_name(bare))
        if not dotted:
            raise UsageError(f"{where} matches no Linear or Conv2d module of the model's {part}")
        module = modules[dotted]
        down, up = layer.down, layer.up
        if isinstance(module, torch.nn.Linear):
            if down.dim() == 4 and down.shape[2:] == (1, 1):
                down, up = down.flatten(1), up.flatten(1)
            want = (module.in_features,)
        else:
            if module.groups != 1:
                raise UsageError(f"{where}: grouped convolutions are not supported")
            if down.dim() == 2 and module.kernel_size == (1, 1):
                down, up = down[:, :, None, None], up[:, :, None, None]
            want = tuple(module.weight.shape[1:])
        if tuple(down.shape[1:]) != want or up.shape[0] != module.weight.shape[0]:
            raise UsageError(f"{where}: shapes down {list(layer.down.shape)} / up {list(layer.up.shape)} do not fit "
                             f"{dotted} (weight {list(module.weight.shape)})")
        if (part, dotted) in out:
            raise UsageError(f"{where}: a second layer for {dotted}")
        out[(part, dotted)] = LoraLayer(down, up, layer.alpha)
    return out


def file_key(fmt: str, part: str, name: str) -> str:
    """The name a layer has in a file of format `fmt` (kohya: flat with its part's prefix; else dotted)."""
    if fmt == "kohya":
        if part.startswith("text_encoder") and flat_name(name).startswith("encoder_layers_"):
            name = "text_model_" + name  # CLIP's names before transformers 5, which sd-scripts and A1111 use
        return f"{KOHYA_PREFIX.get(part, part)}_{flat_name(name)}"
    return f"{part}.{name}"


def describe(lora: LoraFile) -> dict[str, Any]:
    """What `ldmkit lora inspect` prints: format, layer counts per part, ranks, alphas, target kinds, metadata."""
    parts: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for part, name in lora.layers:
        parts[part] = parts.get(part, 0) + 1
        m = _KIND.search(flat_name(name))
        tail = m[1] if m else "_".join(flat_name(name).split("_")[-2:])
        kinds[tail] = kinds.get(tail, 0) + 1
    layers = list(lora.layers.values())
    conv = sum(1 for x in layers if x.down.dim() == 4 and tuple(x.down.shape[2:]) != (1, 1))
    n_params = sum(x.down.numel() + x.up.numel() for x in layers)
    return {"format": lora.format, "layers": len(layers), "parts": parts,
            "ranks": sorted({x.rank for x in layers}), "alphas": sorted({x.alpha for x in layers}),
            "conv_kxk_layers": conv, "parameters": n_params, "targets": dict(sorted(kinds.items())),
            "metadata": lora.metadata}

