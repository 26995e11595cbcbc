"""YAML recipes into typed dataclasses: round trip, overrides, and errors that name the file and key."""

from __future__ import annotations

import dataclasses

import pytest

from ldmkit.config import TrainConfig, apply_overrides, dump_yaml, from_dict, load_recipe
from ldmkit.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Data:
    """Dataset part of a recipe."""

    root: str = "data/shapes"
    """Dataset folder."""
    size: int = 32
    """Image size."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A nested recipe like a component trainer's."""

    data: Data = Data()
    """Data settings."""
    train: TrainConfig = TrainConfig()
    """Loop settings."""
    note: str | None = None
    """Free text."""


def _write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_round_trip_and_defaults(tmp_path):
    recipe = Recipe(data=Data(size=64), train=TrainConfig(steps=5, betas=(0.8, 0.95), lr_schedule="cosine"))
    assert load_recipe(_write(tmp_path, dump_yaml(recipe)), Recipe) == recipe
    assert load_recipe(_write(tmp_path, ""), Recipe) == Recipe()


def test_yaml_1_1_exponent_without_dot_is_read_as_a_float(tmp_path):
    # PyYAML reads `1e-4` as the string "1e-4"; a float field accepts it
    assert load_recipe(_write(tmp_path, "train:\n  lr: 1e-4\n"), Recipe).train.lr == 1e-4


def test_yaml_1_1_bare_no_is_the_choice_no(tmp_path):
    recipe = load_recipe(_write(tmp_path, "train:\n  mixed_precision: no\n"), Recipe, ["train.mixed_precision=no"])
    assert recipe.train.mixed_precision == "no"


def test_dotted_overrides(tmp_path):
    path = _write(tmp_path, "train:\n  steps: 10\n")
    recipe = load_recipe(path, Recipe, ["train.lr=3e-4", "train.steps=20", "data.size=16", "train.betas=[0.5, 0.6]",
                                        "note=hello"])
    assert recipe.train.lr == 3e-4 and recipe.train.steps == 20 and recipe.data.size == 16
    assert recipe.train.betas == (0.5, 0.6) and recipe.note == "hello"
    assert apply_overrides(Recipe, {}, ["train.seed=3"]) == {"train": {"seed": 3}}


@pytest.mark.parametrize(
    ("text", "overrides", "pattern"),
    [
        ("train:\n  lrr: 1\n", [], r"recipe.yaml: unknown key 'train.lrr'; allowed keys under 'train': adam_eps, "),
        ("trian: {}\n", [], r"unknown key 'trian'; allowed keys: data, note, train"),
        ("train:\n  steps: ten\n", [], r"recipe.yaml: 'train.steps' must be int, got 'ten' \(str\)"),
        ("train:\n  steps: 1.5\n", [], r"'train.steps' must be int, got 1.5"),
        ("train:\n  deterministic: 1\n", [], r"'train.deterministic' must be bool"),
        ("train:\n  lr_schedule: linear\n", [], r"'train.lr_schedule' must be one of 'constant', 'cosine'"),
        ("train:\n  betas: [0.9]\n", [], r"'train.betas' must have 2 items"),
        ("train:\n  steps: 0\n", [], r"recipe.yaml: TrainConfig.steps must be >= 1, got 0"),
        ("train:\n  ema_decay: 1.0\n", [], r"TrainConfig.ema_decay must be < 1.0"),
        ("train: 3\n", [], r"'train' must be a mapping \(TrainConfig\), got 3"),
        ("- a\n- b\n", [], r"top level must be a mapping"),
        ("train:\n  steps: [1\n", [], r"recipe.yaml: line \d+, column \d+: invalid YAML"),
        ("", ["train.nope=1"], r"unknown key 'train.nope'; allowed: adam_eps, batch_size"),
        ("", ["train"], r"must look like key.sub=value"),
        ("", ["note.x=1"], r"note is not a section"),
    ],
)
def test_errors_name_file_key_and_what_is_allowed(tmp_path, text, overrides, pattern):
    with pytest.raises(UsageError, match=pattern):
        load_recipe(_write(tmp_path, text), Recipe, overrides)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(UsageError, match="recipe file not found: .*missing.yaml"):
        load_recipe(tmp_path / "missing.yaml", Recipe)


def test_train_config_checks_every_field_in_post_init():
    with pytest.raises(UsageError, match="TrainConfig.mixed_precision must be one of no, bf16, fp16; got 'fp8'"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(UsageError, match="TrainConfig.lr must be a finite number"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(UsageError, match="TrainConfig.batch_size must be an integer"):
        TrainConfig(batch_size=True)


def test_every_train_config_field_has_a_docstring():
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(TrainConfig))).body[0].body
    documented = {
        stmt.target.id
        for stmt, after in zip(body, body[1:])
        if isinstance(stmt, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value.value, str)
    }
    assert documented == {f.name for f in dataclasses.fields(TrainConfig)}


def test_from_dict_rejects_unknown_nested_keys_with_source():
    with pytest.raises(UsageError, match="<cli>: unknown key 'data.colour'"):
        from_dict(Recipe, {"data": {"colour": 1}}, source="<cli>")
