"""Speed when the machine is shared: ldmkit alone vs beside a process that keeps one core busy.

    python benchmarks/contention.py [--workloads train-tiny,train-small64,generate,eval]
                                    [--settings default,active,passive,spin0,threads1,legacy] [--repeats 3]

Each workload runs as a whole `ldmkit` command in a subprocess, once alone and once beside a competitor
(`python -c "while True: pass"`, one core at 100%), for each candidate setting, interleaved over repeats.
A setting is a set of environment variables given to the ldmkit process (the user's own variables win over
ldmkit's defaults, so this is also how a user overrides them):

    legacy   LDMKIT_THREADS=off: libgomp's own default (spin ~300k iterations, then sleep), one thread per
             core, fixed (ldmkit's training before issue 18)
    active   OMP_WAIT_POLICY=ACTIVE (spin forever)
    passive  OMP_WAIT_POLICY=PASSIVE (sleep at once; what generate did before and does now)
    spin0    GOMP_SPINCOUNT=0 (same idea as passive, through libgomp's own knob)
    threads1 one intra-op thread (OMP_NUM_THREADS=1), libgomp default waits
    default  nothing set: ldmkit's defaults (training: threads follow the free cores; generate/eval: passive)

Training runs use train.deterministic=false, the default of every recipe but the tiny test ones: a run that
asks for determinism keeps its thread count (results differ in the last bits with it).

Speed: training = samples/s over the logged steps after the first interval (metrics.jsonl: batch x steps
/ time), so start-up and the cache build are left out; generate / eval = 1 / wall time of the whole command.
Printed per workload and setting: median speed alone, median beside the competitor, and the ratio of the
latter to the fair share (half of the LEGACY setting's speed alone: one of two cores is taken), and the
alone speed relative to legacy alone (the cost of a setting on an idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LDMKIT = [str(Path(sys.executable).with_name("ldmkit"))]  # the venv's console script
COMPETITOR = [sys.executable, "-c", "while True: pass"]

WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "LDMKIT_THREADS")
SETTINGS = {
    # LDMKIT_THREADS=off: ldmkit leaves OpenMP and torch's thread count as torch sets them (the old behaviour)
    "legacy": {"LDMKIT_THREADS": "off"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE", "LDMKIT_THREADS": "off"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "LDMKIT_THREADS": "off"},
    "spin0": {"GOMP_SPINCOUNT": "0", "LDMKIT_THREADS": "off"},
    "threads1": {"OMP_NUM_THREADS": "1", "LDMKIT_THREADS": "off"},
    "default": {},
}


def workload_commands(name: str, work: Path) -> tuple[list[str], Path | None]:
    """(argv, run folder whose metrics.jsonl holds training speed, or None for wall-time workloads)."""
    run = work / f"run-{time.monotonic_ns()}"
    if name == "train-tiny":
        return [*LDMKIT, "train", "unet", "--config", str(ROOT / "configs/tiny.yaml"), "--out", str(run),
                "--set", "train.steps=60", "--set", "train.checkpoint_every=1000",
                "--set", "train.deterministic=false"], run
    if name == "train-small64":
        return [*LDMKIT, "train", "unet", "--config", str(ROOT / "configs/tiny.yaml"), "--out", str(run),
                "--set", "model.preset=small64", "--set", "data.image_size=64", "--set", "train.steps=20",
                "--set", "train.checkpoint_every=1000", "--set", "train.deterministic=false"], run
    if name == "generate":
        return [*LDMKIT, "generate", "a smiling face with sunglasses", "--steps", "10", "--quiet",
                "-o", str(run)], None
    if name == "eval":
        return [*LDMKIT, "eval", str(work / "eval-model" / "final"), "--data", str(work / "eval-model" / "dataset"),
                "--split", "train", "--n", "8", "--steps", "10", "--n-boot", "100", "-o", str(run)], None
    raise SystemExit(f"unknown workload {name!r}")


def training_speed(run: Path) -> float:
    """samples/s over the logged intervals after the first one (metrics.jsonl rows carry samples_per_s)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "samples_per_s" in r][1:]
    # equal samples per interval, so the aggregate rate is the harmonic mean of the interval rates
    return len(rows) / sum(1.0 / r["samples_per_s"] for r in rows)


def run_once(name: str, setting: str, contended: bool, work: Path) -> float:
    argv, run = workload_commands(name, work)
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARS}
    env.update(SETTINGS[setting])
    competitor = subprocess.Popen(COMPETITOR) if contended else None
    try:
        if competitor is not None:
            time.sleep(0.5)  # let the competitor take its core before ldmkit starts
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return training_speed(run) if run is not None and (run / "metrics.jsonl").exists() else 1.0 / wall


def prepare(work: Path, workloads: list[str]) -> None:
    """For eval: a tiny trained model and its dataset, made once, outside the timed runs."""
    def ldmkit(*args: str) -> None:
        subprocess.run([*LDMKIT, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    if "eval" in workloads:  # training runs build their own 48-image dataset (a fraction of a second)
        ldmkit("train", "unet", "--config", str(ROOT / "configs/tiny.yaml"), "--out", str(work / "eval-model"),
               "--set", "train.steps=10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="train-tiny,train-small64,generate,eval")
    parser.add_argument("--settings", default="legacy,active,passive,spin0,threads1,default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    workloads, settings = args.workloads.split(","), args.settings.split(",")
    if "legacy" not in settings:
        settings.insert(0, "legacy")  # the reference of every ratio
    results: dict[tuple[str, str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work, workloads)
        for rep in range(args.repeats):
            for name in workloads:
                # every other repeat runs the settings in reverse, so no setting always follows a busy run
                for setting in (settings if rep % 2 == 0 else settings[::-1]):
                    for contended in (False, True):
                        speed = run_once(name, setting, contended, work)
                        results.setdefault((name, setting, contended), []).append(speed)
                        print(f"rep {rep} {name:14s} {setting:9s} {'busy' if contended else 'alone':5s} "
                              f"{speed:8.3f}  (load average {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    print("| workload | setting | alone (median) | beside 1 busy core | vs fair share | alone vs legacy |")
    print("|---|---|---|---|---|---|")
    for name in workloads:
        legacy_alone = statistics.median(results[(name, "legacy", False)])
        for setting in settings:
            alone = statistics.median(results[(name, setting, False)])
            busy = statistics.median(results[(name, setting, True)])
            unit = "samples/s" if name.startswith("train") else "runs/s"
            print(f"| {name} | {setting} | {alone:.3g} {unit} | {busy:.3g} | {busy / (legacy_alone / 2):.2f}x "
                  f"| {alone / legacy_alone:.3f} |")
    if args.json:
        args.json.write_text(json.dumps([{"workload": n, "setting": s, "contended": c, "speeds": v}
                                         for (n, s, c), v in results.items()], indent=1))


if __name__ == "__main__":
    main()
