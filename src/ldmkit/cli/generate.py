"""`ldmkit generate PROMPT ...` and `ldmkit samplers`: parse, call the pipeline, print paths."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from pathlib import Path

from ldmkit.errors import ModelFolderError, UsageError


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate images from a text prompt",
                       description="Generate images from a text prompt with a model folder "
                                   "(the shipped default model when --model is not given).")
    p.add_argument("prompt", nargs="?", help="what to draw (or --prompts FILE)")
    p.add_argument("--prompts", type=Path, metavar="FILE",
                   help="UTF-8 text file, one prompt per line (blank lines skipped): --n images of each")
    p.add_argument("--batch", type=int, default=16, metavar="B",
                   help="with --prompts: images sampled together (default 16; only float rounding differs)")
    p.add_argument("--model", type=Path, help="model folder (diffusers layout); default: the shipped model")
    p.add_argument("--negative", default="", metavar="TEXT", help="negative prompt (what to steer away from)")
    p.add_argument("--steps", type=int, help="denoising steps (1..1000; default from the model, else 25)")
    p.add_argument("--sampler", help="sampler name (see `ldmkit samplers`; default from the model)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (>= 0; 1 = no guidance)")
    p.add_argument("--guidance-rescale", type=float, help="guidance rescale phi in [0, 1] (Lin et al. 2023)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; image k uses seed + k")
    p.add_argument("--n", type=int, default=1, metavar="N", help="number of images")
    p.add_argument("--size", metavar="WxH", help="image size, e.g. 64x64 (multiple of the VAE factor)")
    p.add_argument("--init-image", type=Path, metavar="FILE", help="start from this image (img2img)")
    p.add_argument("--strength", type=float, help="img2img: how much to change the image, 0..1 (default 0.8)")
    p.add_argument("--best-of", type=int, metavar="N",
                   help="generate N candidates per image and keep the one the model's clip/ scores best")
    p.add_argument("--trajectory", action="store_true", help="also write x_t / predicted-x0 grid PNG and GIF")
    p.add_argument("--trajectory-every", type=int, default=1, metavar="K", help="keep every K-th step")
    p.add_argument("-o", "--out", type=Path, default=Path("outputs"), help="output folder (default: outputs)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow .ckpt/.bin weights (loaded with torch.load(weights_only=True) only)")
    p.add_argument("--fast", action="store_true",
                   help="run the UNet in bfloat16 (faster on CPUs with AMX/AVX512-BF16; images differ slightly)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet (costs ~30-60 s once; pays off for many images, best with --fast)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads (default: torch's, one per core); 1 avoids a 10x slowdown when other "
                        "programs keep the cores busy")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_generate)

    s = sub.add_parser("samplers", help="list the samplers")
    s.set_defaults(func=run_samplers)


def parse_size(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    m = re.fullmatch(r"(\d+)(?:[xX](\d+))?", text.strip())
    if not m:
        raise UsageError(f"--size {text!r}: expected WxH such as 64x64 (or one number for a square)")
    w = int(m.group(1))
    return w, int(m.group(2) or w)


def default_model_dir() -> Path:
    from ldmkit.models.packaged import default_model_dir as packaged_dir

    return packaged_dir()


def resolve_model(path: Path | None) -> Path:
    """--model, else the default model shipped in the package (an error, never random weights, when absent)."""
    if path is None:
        path = default_model_dir()
        if not (path / "model_index.json").exists():
            raise ModelFolderError(
                f"no default model is installed ({path} has no model_index.json) and no --model was given. "
                "Pass --model DIR with a model folder, or make the default model: "
                "`ldmkit train recipe configs/default.yaml --out runs/default` then "
                f"`ldmkit model ship runs/default --out {path}` (or install an ldmkit release, which ships it)")
    if not path.exists():
        raise ModelFolderError(f"model folder {path} does not exist")
    return path


def load_init_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise UsageError(f"cannot read init image {path}: {err}") from None


def read_prompts(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 prompts file, stripped; a clear error for anything else."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UsageError(f"--prompts {path}: cannot read it ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise UsageError(f"--prompts {path}, line {line}: not UTF-8 text (byte {err.start}); "
                         "save the file as UTF-8") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UsageError(f"--prompts {path}: no prompts (every line is blank)")
    return prompts


def run_generate(args: argparse.Namespace) -> int:
    _passive_omp_waits()
    if (args.prompt is None) == (args.prompts is None):
        raise UsageError("give one PROMPT or --prompts FILE (one prompt per line), not both and not neither")
    if args.prompts is not None:
        if args.init_image is not None or args.trajectory or args.best_of is not None:
            raise UsageError("--prompts cannot be combined with --init-image, --trajectory or --best-of; "
                             "run those one prompt at a time")
        if args.batch < 1:
            raise UsageError(f"--batch must be >= 1, got {args.batch}")
    width, height = parse_size(args.size)
    if args.steps is not None and not 1 <= args.steps <= 1000:
        raise UsageError(f"--steps must be in 1..1000, got {args.steps}")
    if args.guidance is not None and args.guidance < 0:
        raise UsageError(f"--guidance must be >= 0, got {args.guidance}")
    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.init_image is None and args.strength is not None:
        print("ldmkit: note: --strength has no effect without --init-image", file=sys.stderr)
    if args.sampler is not None:
        from ldmkit.diffusion.registry import get_sampler

        get_sampler(args.sampler)  # fail before loading anything
    if args.best_of is not None and (args.best_of < 1 or args.trajectory or args.init_image is not None):
        raise UsageError(f"--best-of must be >= 1 and cannot be combined with --trajectory or --init-image; "
                         f"got --best-of {args.best_of}")
    prompts = read_prompts(args.prompts) if args.prompts is not None else None
    model = resolve_model(args.model)
    with _threads(args.threads):
        if prompts is not None:
            return _generate_prompts(args, model, width, height, prompts)
        if args.best_of is not None:
            return _generate_best_of(args, model, width, height)
        return _generate(args, model, width, height)


def _passive_omp_waits() -> None:
    """Idle OpenMP threads sleep instead of spinning, unless the user chose otherwise (before torch loads).

    With spinning (libgomp's default), a second program busy on one of two cores makes parallel ops wait for
    a descheduled thread: `ldmkit generate` with a 64x64 small64 model took 50 s instead of 5 s beside one
    busy loop; with sleeping waits 15.6 s (one thread: 17.5 s). PNG bytes do not depend on the wait policy.
    """
    import os

    if "torch" not in sys.modules:  # libgomp reads the variable once, when torch loads it
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def _threads(n: int | None):
    """torch's CPU thread count set to `n` (None: unchanged) while generating, restored afterwards."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _generate(args: argparse.Namespace, model: Path, width, height) -> int:
    init = load_init_image(args.init_image) if args.init_image is not None else None

    from ldmkit.pipeline.output import save_result
    from ldmkit.pipeline.trajectory import save_trajectory

    pipe = _load_pipeline(args, model)
    result = pipe(args.prompt, negative_prompt=args.negative, steps=args.steps, guidance=args.guidance,
                  guidance_rescale=args.guidance_rescale, sampler=args.sampler, seed=args.seed, num_images=args.n,
                  height=height, width=width, init_image=init, strength=0.8 if args.strength is None else args.strength,
                  trajectory=args.trajectory, trajectory_every=args.trajectory_every, progress=not args.quiet)
    for w in result.warnings:
        print(f"ldmkit: warning: {w}", file=sys.stderr)
    saved = save_result(result, args.out)
    for path in saved:
        print(path)
    if result.trajectory is not None:
        for k, image_path in enumerate(saved):
            # named after the image just written (never an existing name), so earlier trajectories are kept
            for path in save_trajectory(result.trajectory, args.out, image_path.stem, k, final=result.images[k]):
                print(path)
    return 0


def _generate_prompts(args: argparse.Namespace, model: Path, width, height, prompts: list[str]) -> int:
    """--prompts FILE: image k of every prompt uses seed + k, as for one prompt; sampled --batch at a time."""
    from ldmkit.pipeline.output import save_result

    pipe = _load_pipeline(args, model)
    jobs = [(prompt, args.seed + k) for prompt in prompts for k in range(args.n)]
    warned: set[str] = set()
    for at in range(0, len(jobs), args.batch):
        chunk = jobs[at:at + args.batch]
        results = pipe.generate_batch([prompt for prompt, _ in chunk], [seed for _, seed in chunk],
                                      negative_prompt=args.negative, steps=args.steps, guidance=args.guidance,
                                      guidance_rescale=args.guidance_rescale, sampler=args.sampler,
                                      height=height, width=width, progress=not args.quiet)
        for result in results:
            for w in result.warnings:
                if w not in warned:
                    warned.add(w)
                    print(f"ldmkit: warning: {w}", file=sys.stderr)
            for path in save_result(result, args.out):
                print(path, flush=True)
    return 0


def _load_pipeline(args: argparse.Namespace, model: Path):
    import torch

    from ldmkit.pipeline import Pipeline

    if args.quiet:
        _quiet_loading()
    return Pipeline.from_pretrained(model, allow_pickle=args.allow_pickle,
                                    unet_dtype=torch.bfloat16 if args.fast else None, compile=args.compile)


def _quiet_loading() -> None:
    """No "Loading weights" progress bars from transformers / diffusers (--quiet)."""
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()


def reference_png_sha256(model: Path | None, prompt: str, seed: int) -> str:
    """SHA-256 of the PNG that `ldmkit generate PROMPT [--model MODEL] --seed SEED` writes, on ONE thread.

    Bytes differ between thread counts (CPU kernels split their sums by thread), so the reference is
    always taken on one. `ldmkit model ship` records it; tests/pipeline/test_default_model.py compares.
    """
    import hashlib
    import io
    import tempfile

    from ldmkit.cli import build_parser

    with tempfile.TemporaryDirectory() as tmp:
        model_args = ["--model", str(model)] if model is not None else []
        args = build_parser().parse_args(["generate", prompt, *model_args, "--seed", str(seed), "--threads", "1",
                                          "-o", tmp, "--quiet"])
        with contextlib.redirect_stdout(io.StringIO()):
            run_generate(args)
        (png,) = Path(tmp).glob("*.png")
        return hashlib.sha256(png.read_bytes()).hexdigest()


def _generate_best_of(args: argparse.Namespace, model: Path, width, height) -> int:
    """--best-of N: image k keeps the best of candidates seed + k*N .. seed + k*N + N - 1."""
    from ldmkit.models.dual_encoder import CLIP_FOLDER, load_dual_encoder

    if not (model / CLIP_FOLDER).is_dir():
        raise ModelFolderError(f"--best-of reranks with the model's dual encoder, but {model} has no {CLIP_FOLDER}/ "
                               "folder; train one with `ldmkit train clip` or drop --best-of")
    from ldmkit.pipeline.output import save_image
    from ldmkit.pipeline.rerank import rerank_best_of

    dual = load_dual_encoder(model)
    pipe = _load_pipeline(args, model)
    for k in range(args.n):
        result = rerank_best_of(pipe, dual, args.prompt, args.best_of, seed=args.seed + k * args.best_of,
                                negative_prompt=args.negative, steps=args.steps, guidance=args.guidance,
                                guidance_rescale=args.guidance_rescale, sampler=args.sampler, height=height,
                                width=width, progress=not args.quiet)
        for w in result.warnings:
            print(f"ldmkit: warning: {w}", file=sys.stderr)
        print(save_image(result.images[0], result.params, args.out))
    return 0


def run_samplers(args: argparse.Namespace) -> int:
    from ldmkit.diffusion.registry import SAMPLERS

    width = max(len(n) for n in SAMPLERS)
    for spec in SAMPLERS.values():
        kind = "stochastic" if spec.stochastic else "deterministic"
        print(f"{spec.name:<{width}}  {kind:<13} evals/step {spec.evals_per_step:<10} "
              f"matches {spec.diffusers_class:<32} {spec.summary}")
    return 0
