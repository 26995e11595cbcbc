"""Multi-stage recipes: train VAE -> UNet -> CLIP (any order) with one command, resumable at any point.

    # configs/shapes-pipeline.yaml
    stages:
      - {name: vae,  trainer: vae,  config: vae-shapes.yaml}
      - {name: unet, trainer: unet, config: shapes-32.yaml, set: ["model.vae_from={vae}"]}

    ldmkit train recipe configs/shapes-pipeline.yaml --out runs/shapes

Each stage trains in OUT/<name>/ with its own recipe file (a path relative to the stages file) and
overrides, where `{stage}` stands for OUT/<stage>/final and `{out}` for OUT itself (e.g. a dataset folder
that every stage shares: `data.path={out}/dataset`). Running the command again skips finished
stages (their final/ exists), resumes an interrupted one exactly (its run folder holds the state), and
starts the rest, so stopping and restarting at any point gives the same models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ldmkit.config.recipe import read_yaml_mapping
from ldmkit.errors import UsageError

STAGE_KEYS = ("name", "trainer", "config", "set")
OUT_PLACEHOLDER = "out"


@dataclass(frozen=True)
class Stage:
    """One training run of a multi-stage recipe."""

    name: str
    """Folder name under OUT, and how later stages refer to this stage's final model: {name}."""
    trainer: str
    """unet | vae | clip."""
    config: Path
    """The stage's recipe file (resolved against the stages file's folder)."""
    overrides: tuple[str, ...] = ()
    """Dotted overrides, with {stage} placeholders not yet filled in."""

    def __post_init__(self):
        from ldmkit.training.recipes import RECIPES

        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise UsageError(f"stage name {self.name!r}: use letters, digits, '-' and '_' only")
        if self.name == OUT_PLACEHOLDER:
            raise UsageError(f"stage name {self.name!r} is reserved: {{{OUT_PLACEHOLDER}}} stands for the output folder")
        if self.trainer not in RECIPES:
            raise UsageError(f"stage {self.name!r}: trainer {self.trainer!r} is not one of {', '.join(RECIPES)}")


def load_stages(path: str | Path) -> list[Stage]:
    """Read and check a stages file; errors name the file, the stage and the key."""
    path = Path(path)
    data = read_yaml_mapping(path)
    if set(data) != {"stages"} or not isinstance(data["stages"], list) or not data["stages"]:
        raise UsageError(f"{path}: expected one key `stages:` holding a non-empty list of stages")
    stages, seen = [], set()
    for i, item in enumerate(data["stages"]):
        where = f"{path}: stage {i + 1}"
        if not isinstance(item, dict):
            raise UsageError(f"{where}: expected a mapping with keys {', '.join(STAGE_KEYS)}")
        unknown = sorted(set(item) - set(STAGE_KEYS))
        missing = [k for k in ("name", "trainer", "config") if k not in item]
        if unknown or missing:
            raise UsageError(f"{where}: unknown keys {unknown}, missing keys {missing}; allowed: {', '.join(STAGE_KEYS)}")
        overrides = item.get("set", [])
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise UsageError(f"{where}: `set` must be a list of 'key=value' strings")
        stage = Stage(str(item["name"]), str(item["trainer"]), (path.parent / str(item["config"])).resolve(),
                      tuple(overrides))
        if stage.name in seen:
            raise UsageError(f"{where}: stage name {stage.name!r} is used twice")
        if not stage.config.is_file():
            raise UsageError(f"{where}: recipe file {stage.config} does not exist")
        seen.add(stage.name)
        stages.append(stage)
    return stages


def fill_placeholders(overrides: tuple[str, ...], finals: dict[str, Path], stage: str,
                      out: Path | None = None) -> list[str]:
    """Replace {name} with the final model folder of an EARLIER stage, and {out} with the output folder."""
    values = {k: str(v) for k, v in finals.items()}
    if out is not None:
        values[OUT_PLACEHOLDER] = str(out)
    filled = []
    for o in overrides:
        try:
            filled.append(o.format(**values))
        except (KeyError, IndexError) as err:
            raise UsageError(f"stage {stage!r}: override {o!r} refers to {err}, which is not an earlier stage "
                             f"({', '.join(finals) or 'none'})") from None
    return filled


def run_stages(path: str | Path, out: str | Path, *, overrides: list[str] | tuple[str, ...] = (),
               log=print) -> list[tuple[str, str]]:
    """Run every stage in order; returns (stage, what happened) pairs: skipped | resumed | trained | interrupted.

    `overrides` apply to every stage's recipe after the stage's own (placeholders allowed); a stage that
    resumes keeps the recipe stored in its run folder."""
    from ldmkit.training.trainers import resume_run, run_trainer, trainer_of

    stages, out = load_stages(path), Path(out).resolve()  # absolute: run folders record these paths
    finals: dict[str, Path] = {}
    done: list[tuple[str, str]] = []
    for stage in stages:
        run_dir = out / stage.name
        if (run_dir / "final").is_dir():
            status = "skipped"
        elif trainer_of(run_dir) is not None:
            result = resume_run(run_dir)
            status = "interrupted" if result.interrupted else "resumed"
        else:
            result = run_trainer(stage.trainer, stage.config, run_dir, fill_placeholders(stage.overrides + tuple(overrides), finals, stage.name, out))
            status = "interrupted" if result.interrupted else "trained"
        log(f"stage {stage.name} ({stage.trainer}): {status} -> {run_dir / 'final'}")
        done.append((stage.name, status))
        if status == "interrupted":
            break
        finals[stage.name] = run_dir / "final"
    return done
