"""YAML recipes <-> nested typed dataclasses, with dotted command-line overrides.

`load_recipe("configs/unet.yaml", UNetRecipe, ["train.lr=1e-4"])` reads the file, applies the
overrides, converts every value to its annotated type and builds the dataclasses (whose
`__post_init__` checks ranges). Unknown keys, wrong types and failed checks raise `UsageError`
naming the file and the dotted key, and listing what is allowed. YAML aliases (`*name`) are refused (a
recipe never needs them, and nested ones expand exponentially), files are bounded in size before reading,
and any value a message echoes is clipped to ~200 characters (`ldmkit.errors.shown`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ldmkit.errors import UsageError, shown

T = TypeVar("T")
MAX_RECIPE_BYTES = 1_000_000
"""A recipe or stages file larger than this is refused before it is read."""


def parse_yaml(text: str, where: str = "value") -> Any:
    """yaml.safe_load without aliases: `*name` raises UsageError (an alias bomb never expands)."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise UsageError(f"{where}: line {mark.line + 1}, column {mark.column + 1}: YAML aliases "
                                 "(*name) are not allowed in ldmkit recipes; write the value out")
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"{where}:{at} invalid YAML: {shown(problem, quote=False)}") from None


def load_recipe(path: str | Path, cls: type[T], overrides: Sequence[str] = ()) -> T:
    """Read a YAML recipe into `cls`, after applying `key.sub=value` overrides."""
    path = Path(path)
    data = read_yaml_mapping(path)
    data = apply_overrides(cls, data, overrides)
    return from_dict(cls, data, source=str(path))


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML file whose top level is a mapping (an empty file is an empty mapping)."""
    if not path.is_file():
        raise UsageError(f"recipe file not found: {path}")
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise UsageError(f"{path}: {size} bytes is larger than a recipe can be ({MAX_RECIPE_BYTES} bytes)")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def apply_overrides(cls: type, data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of `data` with each `a.b.c=value` set (value parsed as YAML), keys checked against `cls`."""
    import copy

    result = copy.deepcopy(dict(data))
    for text in overrides:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"override {shown(text)} must look like key.sub=value")
        keys = key.strip().split(".")
        node_cls: type | None = cls
        node = result
        for depth, name in enumerate(keys):
            where = ".".join(keys[: depth + 1])
            if node_cls is None:
                raise UsageError(f"override {shown(text)}: {'.'.join(keys[:depth])} is not a section")
            fields = {f.name: f for f in dataclasses.fields(node_cls)}
            if name not in fields:
                raise UsageError(
                    f"override {shown(text)}: unknown key {shown(where)}; allowed: {', '.join(sorted(fields))}"
                )
            if depth == len(keys) - 1:
                node[name] = parse_yaml(raw, f"override {shown(text)}") if raw.strip() else ""
                break
            node_cls = _dataclass_in(typing.get_type_hints(node_cls)[name])
            child = node.get(name)
            if not isinstance(child, dict):
                child = {}
                node[name] = child
            node = child
    return result


def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "<recipe>", prefix: str = "") -> T:
    """Build dataclass `cls` from plain data, converting values to the annotated field types."""
    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: {prefix or 'the recipe'} must be a mapping, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        under = f" under {shown(prefix)}" if prefix else ""
        raise UsageError(
            f"{source}: unknown key {shown(_join(prefix, str(unknown[0])))}; allowed keys{under}: "
            f"{', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, field in fields.items():
        where = _join(prefix, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], source, where)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise UsageError(f"{source}: missing required key {shown(where)}")
    try:
        return cls(**kwargs)
    except UsageError as exc:  # field checks echo values: keep the message bounded whatever they did
        raise UsageError(f"{source}: {shown(str(exc), 1000, quote=False)}") from exc


def to_dict(obj: Any) -> Any:
    """A dataclass (or nested data) as plain YAML/JSON-safe values: tuples become lists, paths strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_yaml(obj: Any) -> str:
    """YAML text of a dataclass, readable back with `load_recipe` into the same class."""
    import yaml

    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=None)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass inside `tp` (itself, or the non-None member of an Optional), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if _is_union(tp):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if _is_union(tp):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return getattr(tp, "__name__", None) or str(tp)


def _convert(tp: Any, value: Any, source: str, where: str) -> Any:
    """Check/convert one value to type `tp`; raise UsageError naming the key on mismatch."""

    def bad() -> UsageError:
        return UsageError(
            f"{source}: {shown(where)} must be {_describe(tp)}, got {shown(value)} ({type(value).__name__})"
        )

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad()
        return from_dict(tp, value, source=source, prefix=where)
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        inner = _dataclass_in(tp)
        if inner is not None and isinstance(value, Mapping):  # Optional[Section]: the section's own message
            return from_dict(inner, value, source=source, prefix=where)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, source, where)
            except UsageError:
                continue
        raise bad()
    if origin is typing.Literal:
        if isinstance(value, bool) and ("no" if value is False else "yes") in args:
            # YAML 1.1 (PyYAML) reads a bare `no` / `yes` as a boolean: `mixed_precision: no` means "no"
            return "no" if value is False else "yes"
        if value not in args:
            raise bad()
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 (PyYAML) reads `1e-4` (no dot) as a string; accept any text float() parses.
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise bad()
        return Path(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, source, f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(value) != len(args):
            raise UsageError(f"{source}: {shown(where)} must have {len(args)} items, got {len(value)}: {shown(value)}")
        return tuple(_convert(a, v, source, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad()
        item = args[0] if args else Any
        return [_convert(item, v, source, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad()
        vt = args[1] if args else Any
        return {str(k): _convert(vt, v, source, f"{where}.{k}") for k, v in value.items()}
    raise UsageError(f"{source}: {shown(where)} has a field type ldmkit cannot read from YAML: {tp!r}")
