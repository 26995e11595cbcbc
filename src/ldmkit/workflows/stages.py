"""Multi-stage recipes: train VAE -> UNet -> CLIP (any order), assemble the model, evaluate it: one command,
resumable at any point.

    # configs/shapes-pipeline.yaml
    stages:
      - {name: vae,  trainer: vae,  config: vae-shapes.yaml}
      - {name: unet, trainer: unet, config: shapes-32.yaml, set: ["model.vae_from={vae}"]}
      - {name: model, ship: {guidance: 5}}                        # OUT/model: one fp16 model folder
      - {name: eval, eval: {model: "{model}", n: 64, sweep: "guidance=1,3,5"}}

    ldmkit train recipe configs/shapes-pipeline.yaml --out runs/shapes

A *training* stage trains in OUT/<name>/ with its own recipe file (a path relative to the stages file) and
overrides, where `{stage}` stands for an earlier stage's result (OUT/<stage>/final for a training stage,
OUT/<stage> for the others) and `{out}` for OUT itself (e.g. a dataset folder that every stage shares:
`data.path={out}/dataset`). A *ship* stage writes the finished training stages as one model folder, the way
`ldmkit model ship OUT` does (its options: name, sampler, steps, guidance, max_mb). An *eval* stage runs
`ldmkit eval` into OUT/<name>/ (its options are EvalSettings' fields; `data` defaults to {out}/dataset).

Running the command again skips finished stages (a final/, ldmkit.json or metrics.json exists; a ship's
files must match their recorded SHA-256, else the stage stops with an error and nothing there is touched),
resumes an interrupted training stage exactly (from its newest checkpoint that verifies), redoes an
interrupted ship or eval (each writes to a temporary folder and renames it when done), and starts the rest,
so stopping and restarting at any point gives the same models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldmkit.config.checks import check_float
from ldmkit.config.recipe import read_yaml_mapping
from ldmkit.config.training import MAX_MINUTES
from ldmkit.workflows.budget import check_budget, read_ledger, stage_deadline, write_ledger
from ldmkit.errors import UsageError, shown

STAGE_KEYS = ("name", "trainer", "config", "set", "share", "ship", "eval")
TOP_KEYS = ("stages", "budget_minutes")
OUT_PLACEHOLDER = "out"
SHIP_OPTIONS = {"name": str, "sampler": str, "steps": int, "guidance": (int, float), "max_mb": (int, float)}
EVAL_OPTIONS = {"model": str, "data": str, "split": str, "n": int, "seeds": list, "sweep": str, "clip": str,
                "steps": int, "sampler": str, "guidance": (int, float), "guidance_rescale": (int, float),
                "karras": bool, "seed_per_image": bool, "best_of": int, "n_boot": int,
                "where": dict, "attributes": str, "boot_seed": int, "batch": int,
                "prompt_set": str, "sample_seed": int, "fit": str}  # EvalSettings' fields but `out` (a test checks)
EVAL_PATHS = ("model", "data", "clip", "attributes")  # eval options that may hold {stage} / {out} placeholders


@dataclass(frozen=True)
class Stage:
    """One training run of a multi-stage recipe."""

    name: str
    """Folder name under OUT, and how later stages refer to this stage's result: {name}."""
    trainer: str
    """unet | vae | clip | attributes for a training stage; "ship" or "eval" for the other two kinds."""
    config: Path | None
    """A training stage's recipe file (resolved against the stages file's folder); None for ship / eval."""
    overrides: tuple[str, ...] = ()
    """Dotted overrides, with {stage} placeholders not yet filled in."""
    options: dict[str, Any] = field(default_factory=dict)
    """A ship or eval stage's options (checked against SHIP_OPTIONS / EVAL_OPTIONS)."""
    share: float = 1.0
    """A training stage's weight in the recipe's time budget (`budget_minutes`): each stage gets this share
    of the time the stages before it left, against the shares of the stages still to come."""

    def __post_init__(self):
        from ldmkit.training.recipes import RECIPES

        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise UsageError(f"stage name {shown(self.name)}: use letters, digits, '-' and '_' only")
        if self.name == OUT_PLACEHOLDER:
            raise UsageError(f"stage name {shown(self.name)} is reserved: {{{OUT_PLACEHOLDER}}} stands for the "
                             "output folder")
        if self.kind == "train" and self.trainer not in RECIPES:
            raise UsageError(f"stage {shown(self.name)}: trainer {shown(self.trainer)} is not one of "
                             f"{', '.join(RECIPES)}")
        allowed = {"ship": SHIP_OPTIONS, "eval": EVAL_OPTIONS}.get(self.trainer, {})
        for key, value in self.options.items():
            if key not in allowed:
                raise UsageError(f"stage {shown(self.name)}: unknown {self.trainer} option {shown(key)}; allowed: "
                                 f"{', '.join(allowed)}")
            if not isinstance(value, allowed[key]) or isinstance(value, bool):
                types = allowed[key] if isinstance(allowed[key], tuple) else (allowed[key],)
                raise UsageError(f"stage {shown(self.name)}: {self.trainer} option {key}={shown(value)} has the "
                                 f"wrong type; expected {' or '.join(t.__name__ for t in types)}")

        check_float(f"stage {shown(self.name)}", "share", self.share, positive=True, maximum=1e6)
        if self.kind == "eval" and "model" not in self.options:
            raise UsageError(f"stage {shown(self.name)}: eval needs `model:` (e.g. \"{{model}}\", a ship stage's "
                             "result)")

    @property
    def kind(self) -> str:
        """"train", "ship" or "eval"."""
        return self.trainer if self.trainer in ("ship", "eval") else "train"

    def result(self, out: Path) -> Path:
        """What {name} stands for in later stages: the final model of a training stage, else OUT/<name>."""
        return out / self.name / "final" if self.kind == "train" else out / self.name

    def finished(self, out: Path) -> bool:
        """Whether the stage's result is there and verifies; a result that does not verify is refused (never
        redone over what is there): a ship must match its recorded SHA-256s, a final/ must be a non-empty folder."""
        marker = {"train": "final", "ship": "ldmkit.json", "eval": "metrics.json"}[self.kind]
        path = out / self.name / marker
        if not path.exists():
            return False
        problem = None
        if self.kind == "ship":
            from ldmkit.models.shipping import verify_ship

            problem = verify_ship(out / self.name)
        elif self.kind == "train" and (not path.is_dir() or not any(path.iterdir())):
            problem = f"{path} is not a model folder"
        if problem:
            raise UsageError(f"stage {self.name}: {out / self.name} does not verify ({problem}); it was left as it "
                             "is: move it away to redo the stage")
        return True


def load_stages(path: str | Path) -> list[Stage]:
    """Read and check a stages file; errors name the file, the stage and the key."""
    return load_recipe(path)[0]


def load_recipe(path: str | Path) -> tuple[list[Stage], float | None]:
    """A stages file's stages and its time budget in minutes (None: none), read once and checked."""
    path = Path(path)
    data = read_yaml_mapping(path)
    if ("stages" not in data or not set(data) <= set(TOP_KEYS) or not isinstance(data["stages"], list)
            or not data["stages"]):
        raise UsageError(f"{path}: expected a key `stages:` holding a non-empty list of stages (and optionally "
                         "`budget_minutes:`)")
    budget = check_budget(data.get("budget_minutes"), path)
    stages, seen = [], set()
    for i, item in enumerate(data["stages"]):
        where = f"{path}: stage {i + 1}"
        if not isinstance(item, dict):
            raise UsageError(f"{where}: expected a mapping with keys {', '.join(STAGE_KEYS)}")
        unknown = sorted(set(item) - set(STAGE_KEYS))
        kinds = [k for k in ("trainer", "ship", "eval") if k in item]
        if len(kinds) > 1:
            raise UsageError(f"{where}: give one of `trainer`, `ship` or `eval`, not {' and '.join(kinds)}")
        kind = kinds[0] if kinds else "trainer"
        need = ("name", "trainer", "config") if kind == "trainer" else ("name", kind)
        missing = [k for k in need if k not in item]
        if kind != "trainer":
            unknown += [k for k in ("config", "set", "share") if k in item]
        if unknown or missing:
            raise UsageError(f"{where}: unknown keys {unknown}, missing keys {missing}; allowed: "
                             + (", ".join(STAGE_KEYS[:5]) if kind == "trainer" else f"name, {kind}"))
        if kind == "trainer" and str(item["trainer"]) in ("ship", "eval"):
            raise UsageError(f"{where}: write `{item['trainer']}: {{options}}` instead of `trainer: {item['trainer']}`")
        if kind == "trainer":
            overrides = item.get("set", [])
            if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
                raise UsageError(f"{where}: `set` must be a list of 'key=value' strings")
            stage = Stage(str(item["name"]), str(item["trainer"]), (path.parent / str(item["config"])).resolve(),
                          tuple(overrides), share=item.get("share", 1.0))
            if not stage.config.is_file():
                raise UsageError(f"{where}: recipe file {stage.config} does not exist")
        else:
            options = item[kind] if item[kind] is not None else {}
            if not isinstance(options, dict):
                raise UsageError(f"{where}: `{kind}` must be a mapping of options (or {{}})")
            stage = Stage(str(item["name"]), kind, None, options=dict(options))
        if stage.name in seen:
            raise UsageError(f"{where}: stage name {shown(stage.name)} is used twice")
        seen.add(stage.name)
        stages.append(stage)
    if "budget_minutes" not in data and any("share" in item for item in data["stages"]):
        raise UsageError(f"{path}: a stage's `share` has no effect without `budget_minutes:` (the recipe's time "
                         "budget it divides)")
    return stages, budget


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
            raise UsageError(f"stage {shown(stage)}: override {shown(o)} refers to {shown(str(err))}, which is not an earlier stage "
                             f"({', '.join(finals) or 'none'})") from None
    return filled


def run_stages(path: str | Path, out: str | Path, *, overrides: list[str] | tuple[str, ...] = (),
               budget_minutes: float | None = None, log=print) -> list[tuple[str, str]]:
    """Run every stage in order; returns (stage, what happened) pairs: skipped | resumed | trained | interrupted
    (training stages), skipped | shipped (ship), skipped | evaluated (eval).

    `overrides` apply to every training stage whose recipe has the override's section, after the stage's
    own (placeholders allowed): `model.latent_channels=8` reaches the vae, unet and clip stages, not the
    attributes classifier, which has no model section; a section no training stage has is an error before
    anything runs. A stage that resumes keeps the recipe stored in its run folder. Overrides starting with
    `eval.` or `ship.` set an option of every eval / ship stage instead (e.g. `eval.n=50`). Each stage's
    wall time is logged.

    A time budget (`budget_minutes`, else the file's; 0: none) bounds the wall time of the training stages
    together, dataset builds and caches included: each stage's steps are fitted to its share of what is left
    (`workflows.budget.stage_deadline`), and OUT/budget.json keeps what each stage has spent over every attempt."""
    stages, file_budget = load_recipe(path)
    out = Path(out).resolve()  # absolute: run folders record these paths
    overrides, stages = _stage_kind_overrides(overrides, stages)
    applies = _override_targets(overrides, stages)
    if budget_minutes is None:
        budget_minutes = file_budget
    elif not 0 <= budget_minutes <= MAX_MINUTES:
        raise UsageError(f"--budget-minutes must be 0 (no budget) to {MAX_MINUTES:g}, got {budget_minutes:g}")
    budget_minutes = budget_minutes or None  # 0 turns the file's budget off
    spent = read_ledger(out) if budget_minutes else {}
    finals: dict[str, Path] = {}
    done: list[tuple[str, str]] = []
    began = time.perf_counter()
    for stage in stages:
        start = time.perf_counter()
        if stage.finished(out):
            status = "skipped"
        elif stage.kind == "ship":
            _ship_stage(stage, out, Path(path), log)
            status = "shipped"
        elif stage.kind == "eval":
            _eval_stage(stage, out, finals, log)
            status = "evaluated"
        else:
            deadline = None
            if budget_minutes:
                pending = [s for s in stages[stages.index(stage):] if s.kind == "train" and not s.finished(out)]
                deadline = stage_deadline(stage, pending, budget_minutes, spent, log)
            try:
                status = _train_stage(stage, out, finals, overrides, applies, deadline)
            finally:
                if budget_minutes:
                    spent[stage.name] = spent.get(stage.name, 0.0) + time.perf_counter() - start
                    write_ledger(out, spent)
        log(f"stage {stage.name} ({stage.trainer}): {status} in {_minutes(time.perf_counter() - start)} "
            f"-> {stage.result(out)}")
        done.append((stage.name, status))
        if status == "interrupted":
            break
        finals[stage.name] = stage.result(out)
    log(f"recipe {path}: {len(done)} of {len(stages)} stages in {_minutes(time.perf_counter() - began)}")
    return done


def _train_stage(stage: Stage, out: Path, finals: dict[str, Path], overrides: tuple[str, ...],
                 applies: dict[str, set[str]], deadline: float | None) -> str:
    """Train or resume one training stage: "trained", "resumed" or "interrupted"."""
    from ldmkit.training.trainers import resume_run, run_trainer, trainer_of

    run_dir = out / stage.name
    if trainer_of(run_dir) is not None:
        result = resume_run(run_dir, deadline=deadline)
        return "interrupted" if result.interrupted else "resumed"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(f"stage {stage.name}: {run_dir} holds files but no training run; it was left as it "
                         "is: move it away to train the stage")
    own = tuple(o for o in overrides if stage.name in applies[o])
    result = run_trainer(stage.trainer, stage.config, run_dir,
                         fill_placeholders(stage.overrides + own, finals, stage.name, out), deadline=deadline)
    return "interrupted" if result.interrupted else "trained"


def _override_targets(overrides: tuple[str, ...], stages: list[Stage]) -> dict[str, set[str]]:
    """For each recipe-wide override, the training stages whose recipe has its top-level section."""
    from dataclasses import fields

    from ldmkit.training.recipes import RECIPES

    sections = {stage.name: {f.name for f in fields(RECIPES[stage.trainer])} for stage in stages
                if stage.kind == "train"}
    targets = {}
    for override in overrides:
        section = override.split("=", 1)[0].split(".", 1)[0].strip()
        targets[override] = {name for name, names in sections.items() if section in names}
        if not targets[override]:
            known = sorted(set().union(*sections.values()))
            raise UsageError(f"--set {override}: no training stage's recipe has a {shown(section)} section; "
                             f"sections: {', '.join(known)} (or eval.KEY / ship.KEY for those stages)")
    return targets


def _stage_kind_overrides(overrides, stages: list[Stage]) -> tuple[tuple[str, ...], list[Stage]]:
    """Split off `eval.KEY=VALUE` / `ship.KEY=VALUE` overrides and apply them to the stages of that kind;
    the rest are returned for the training stages."""
    import dataclasses

    from ldmkit.config.recipe import parse_yaml

    rest, options = [], {"eval": {}, "ship": {}}
    for text in overrides:
        key, sep, raw = text.partition("=")
        kind, dot, option = key.strip().partition(".")
        if kind not in options or not dot:
            rest.append(text)
            continue
        if not sep or not option:
            raise UsageError(f"override {shown(text)} must look like {kind}.OPTION=value")
        options[kind][option] = parse_yaml(raw, f"override {shown(text)}") if raw.strip() else ""
    for kind, opts in options.items():
        if opts and not any(s.kind == kind for s in stages):
            raise UsageError(f"overrides {', '.join(f'{kind}.{k}' for k in opts)}: the recipe has no {kind} stage")
    stages = [dataclasses.replace(s, options={**s.options, **options[s.kind]}) if options.get(s.kind) else s
              for s in stages]  # re-checked by Stage.__post_init__
    return tuple(rest), stages


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _ship_stage(stage: Stage, out: Path, stages_file: Path, log) -> None:
    """The finished training stages of OUT as one fp16 model folder OUT/<name> (`ldmkit model ship OUT`)."""
    from ldmkit.models.shipping import MAX_BYTES, ShipSpec, ship_model

    opts = stage.options
    sampling = {k: opts[k] for k in ("sampler", "steps", "guidance") if k in opts}
    spec = ShipSpec(source=out, out=out / stage.name, recipe=stages_file, sampling=sampling, name=opts.get("name", ""),
                    replace=True, max_bytes=int(opts["max_mb"] * 1_000_000) if "max_mb" in opts else MAX_BYTES)
    ship_model(spec, reference=_reference, log=log)  # atomic: a stopped ship leaves no ldmkit.json, so it is redone


def _reference(folder: Path, info: dict) -> str:
    """The reference image hash, as `ldmkit model ship` records it."""
    from ldmkit.pipeline.reference import reference_png_sha256

    return reference_png_sha256(folder, info["prompt"], info["seed"])


def _eval_stage(stage: Stage, out: Path, finals: dict[str, Path], log) -> None:
    """`ldmkit eval` into OUT/<name>: written to OUT/<name>.partial, renamed when metrics.json is complete."""
    import shutil

    from ldmkit.evaluation.metric_sets import write_json
    from ldmkit.evaluation.run import METRICS_FILE, EvalSettings, evaluate, parse_sweep

    opts = dict(stage.options)
    opts.setdefault("data", f"{{{OUT_PLACEHOLDER}}}/dataset")
    for key in EVAL_PATHS:
        if key in opts:
            (opts[key],) = fill_placeholders((opts[key],), finals, stage.name, out)
    if "sweep" in opts:
        opts["sweep"] = parse_sweep(opts["sweep"])
    if "seeds" in opts:
        opts["seeds"] = tuple(opts["seeds"])
    final, partial = out / stage.name, out / f"{stage.name}.partial"
    if final.exists():
        raise UsageError(f"{final} exists but holds no metrics.json; move it away and run the recipe again")
    if partial.exists():
        shutil.rmtree(partial)  # this stage's own unfinished output from a stopped run
    metrics = evaluate(EvalSettings(out=partial, **opts))
    for note in metrics["notes"]:
        log(f"stage {stage.name}: note: {note}")
    metrics["settings"]["out"] = str(final)  # where it lives once renamed
    (partial / METRICS_FILE).unlink()
    write_json(partial / METRICS_FILE, metrics)
    partial.rename(final)
