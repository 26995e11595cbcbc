"""`ldmkit generate PROMPT ...` and `ldmkit samplers`: parse, call the pipeline, print paths."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import sys
from pathlib import Path

from ldmkit.cli.lora import lora_specs
from ldmkit.cpu_threads import requested_threads
from ldmkit.errors import ModelFolderError, UsageError
from ldmkit.pipeline import SamplingSettings, limits
from ldmkit.pipeline.embedding import embedding_specs
from ldmkit.pipeline.settings import check_text


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate images from a text prompt",
                       description="Generate images from a text prompt with a model folder "
                                   "(the shipped default model when --model is not given).",
                       epilog=limits.limits_help())
    p.add_argument("prompt", nargs="?", help="what to draw (or --prompts FILE)")
    p.add_argument("--prompts", type=Path, metavar="FILE",
                   help="UTF-8 text file, one prompt per line (blank lines skipped): --n images of each")
    p.add_argument("--batch", type=int, default=16, metavar="B",
                   help="with --prompts: images sampled together (default 16; only float rounding differs)")
    p.add_argument("--model", type=Path, metavar="DIR_OR_FILE",
                   help="model folder (diffusers layout) or one Stable Diffusion checkpoint file (.safetensors); "
                        "default: the shipped model")
    p.add_argument("--preset", choices=SINGLE_FILE_PRESETS,
                   help="with --model FILE: the checkpoint's architecture (default: inferred from its shapes)")
    p.add_argument("--negative", default="", metavar="TEXT", help="negative prompt (what to steer away from)")
    p.add_argument("--steps", type=int,
                   help=f"denoising steps (1..{limits.MAX_STEPS}; default from the model, else 25)")
    p.add_argument("--sampler", help="sampler name (see `ldmkit samplers`; default from the model)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (>= 0; 1 = no guidance)")
    p.add_argument("--guidance-rescale", type=float, help="guidance rescale phi in [0, 1] (Lin et al. 2023)")
    p.add_argument("--karras", action="store_true",
                   help="Karras et al. 2022 sigma spacing (euler, heun, dpmpp and unipc samplers)")
    p.add_argument("--timestep-spacing", choices=limits.TIMESTEP_SPACINGS,
                   help="how inference timesteps are picked (default: the model's scheduler config)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the first image, 0..2^64-1; image k uses seed + k; -1: random (printed, and "
                        "stored in the PNG)")
    p.add_argument("--n", type=int, default=1, metavar="N",
                   help=f"number of images (1..{limits.MAX_IMAGES}; sampled in runs that fit in memory)")
    p.add_argument("--size", metavar="WxH",
                   help="image size, e.g. 64x64 (multiples of the VAE factor; default: the model's, or an init "
                        "image's, scaled down to the model's size)")
    p.add_argument("--max-pixels", type=int, default=limits.MAX_PIXELS, metavar="P",
                   help=f"pixel budget per image, width x height (default {limits.MAX_PIXELS} = 2048x2048)")
    p.add_argument("--init-image", type=Path, metavar="FILE", help="start from this image (img2img)")
    p.add_argument("--strength", type=float, help="img2img: how much to change the image, 0..1 (default 0.8)")
    p.add_argument("--best-of", type=int, metavar="N",
                   help="generate N candidates per image and keep the one the model's clip/ scores best")
    p.add_argument("--trajectory", action="store_true", help="also write x_t / predicted-x0 grid PNG and GIF")
    p.add_argument("--trajectory-every", type=int, metavar="K", help="with --trajectory: keep every K-th step")
    p.add_argument("-o", "--out", type=Path, default=Path("outputs"), help="output folder (default: outputs)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow .ckpt/.bin weights (loaded with torch.load(weights_only=True) only)")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="apply a LoRA .safetensors file (kohya, PEFT or diffusers layout) at SCALE (default 1); "
                        "repeatable: the files add up")
    p.add_argument("--embedding", action="append", default=[], metavar="FILE[:TOKEN]",
                   help="add a textual-inversion embedding (.safetensors: A1111/kohya emb_params or diffusers) under "
                        "TOKEN (default: the file's own token, else its stem); prompts use the token; repeatable")
    p.add_argument("--fast", action="store_true",
                   help="run the UNet in bfloat16 (faster on CPUs with AMX/AVX512-BF16; images differ slightly)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet (costs ~30-60 s once; pays off for many images, best with --fast)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads (default: one per core, or LDMKIT_THREADS=N); idle threads sleep at once, "
                        "so a busy machine is shared (docs/benchmarks.md)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_generate)

    s = sub.add_parser("samplers", help="list the samplers")
    s.set_defaults(func=run_samplers)


def parse_size(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    m = re.fullmatch(r"(\d{1,9})(?:[xX](\d{1,9}))?", text.strip())
    if not m:
        raise UsageError(f"--size {text!r}: expected WxH such as 64x64 (or one number for a square)")
    w = int(m.group(1))
    return w, int(m.group(2) or w)


def default_model_dir() -> Path:
    from ldmkit.models.packaged import default_model_dir as packaged_dir

    return packaged_dir()


SINGLE_FILE_PRESETS = ("tiny", "sd15", "sd21")  # ldmkit.models.presets with a CLIP text encoder


def resolve_model(path: Path | None, preset: str | None = None) -> Path:
    """--model (a folder, or a checkpoint file whose architecture --preset may name), else the default model
    shipped in the package (an error, never random weights, when absent)."""
    if preset is not None and (path is None or not path.is_file()):
        raise UsageError("--preset names the architecture of a single checkpoint file (--model FILE.safetensors); "
                         "a model folder's own configs give its architecture, so drop --preset")
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
    if path.is_file() and path.suffix not in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"):
        raise UsageError(f"--model {path}: a file must be one Stable Diffusion checkpoint (.safetensors, or a "
                         "pickle such as .ckpt); otherwise pass a model folder")
    return path


def load_init_image(path: Path):
    """The init image as RGB, decoded under a pixel limit by the data readers' loader (16-bit grey, CMYK,
    alpha and EXIF rotation converted as for training images)."""
    from ldmkit.data.images import BadImage, load_rgb_within

    try:
        image, _ = load_rgb_within(path, limits.MAX_INIT_IMAGE_PIXELS)
    except BadImage as bad:
        raise UsageError(f"cannot read init image {path}: {bad.detail}") from None
    return image


def read_prompts(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 prompts file, stripped; a clear error for anything else."""
    try:
        size = path.stat().st_size
        if size > MAX_PROMPTS_FILE_BYTES:
            raise UsageError(f"--prompts {path}: {size} bytes; at most {MAX_PROMPTS_FILE_BYTES} "
                             f"({limits.MAX_IMAGES} prompts of up to {limits.MAX_PROMPT_CHARS} characters)")
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
    if len(prompts) > limits.MAX_IMAGES:
        raise UsageError(f"--prompts {path}: {len(prompts)} prompts; at most {limits.MAX_IMAGES} per file")
    for number, prompt in enumerate(prompts, 1):
        check_text(prompt, f"--prompts {path}, prompt {number}")
    return prompts


MAX_PROMPTS_FILE_BYTES = limits.MAX_IMAGES * (limits.MAX_PROMPT_CHARS + 2) * 4
"""A --prompts file larger than this cannot hold MAX_IMAGES prompts within the limits: refused unread."""


def sampling_settings(args: argparse.Namespace) -> SamplingSettings:
    """The typed request from the flags, checked before any model loads (seed -1 drawn here)."""
    width, height = parse_size(args.size)
    return SamplingSettings(
        negative_prompt=args.negative, steps=args.steps, sampler=args.sampler, guidance=args.guidance,
        guidance_rescale=args.guidance_rescale, seed=args.seed, num_images=args.n, width=width, height=height,
        strength=args.strength, karras=args.karras, timestep_spacing=args.timestep_spacing,
        max_pixels=args.max_pixels).with_seed()


def run_generate(args: argparse.Namespace) -> int:
    if (args.prompt is None) == (args.prompts is None):
        raise UsageError("give one PROMPT or --prompts FILE (one prompt per line), not both and not neither")
    if args.prompts is not None:
        if args.init_image is not None or args.trajectory or args.best_of is not None:
            raise UsageError("--prompts cannot be combined with --init-image, --trajectory or --best-of; "
                             "run those one prompt at a time")
        if not 1 <= args.batch <= limits.MAX_IMAGES:
            raise UsageError(f"--batch must be >= 1 and at most {limits.MAX_IMAGES}, got {args.batch}")
    else:
        check_text(args.prompt, "prompt")
    if args.init_image is None and args.strength is not None:
        raise UsageError("--strength has no effect without --init-image")
    if args.trajectory_every is not None and (not args.trajectory or args.trajectory_every < 1):
        raise UsageError(f"--trajectory-every must be >= 1 and needs --trajectory, got {args.trajectory_every}")
    settings = sampling_settings(args)  # every range check, before anything is loaded
    if args.lora and args.compile:
        raise UsageError("--lora cannot be combined with --compile (compiling freezes the UNet's weights)")
    lora_specs(args.lora)  # each file exists, is .safetensors and within bounds, before the model loads
    embedding_specs(args.embedding, allow_pickle=args.allow_pickle)  # the same for --embedding files
    if args.best_of is not None:
        if args.best_of < 1 or args.trajectory or args.init_image is not None:
            raise UsageError(f"--best-of must be >= 1 and cannot be combined with --trajectory or --init-image; "
                             f"got --best-of {args.best_of}")
        dataclasses.replace(settings, num_images=args.n * args.best_of)  # all candidates' seeds, checked
    if args.seed == -1:
        print(f"ldmkit: note: random seed {settings.seed}", file=sys.stderr)
    prompts = read_prompts(args.prompts) if args.prompts is not None else None
    from ldmkit.pipeline.output import check_output_dir

    check_output_dir(args.out)
    init = load_init_image(args.init_image) if args.init_image is not None else None
    model = resolve_model(args.model, args.preset)
    with _threads(requested_threads(args.threads)):  # --threads, else LDMKIT_THREADS, else torch's
        if prompts is not None:
            return _generate_prompts(args, model, settings, prompts)
        if args.best_of is not None:
            return _generate_best_of(args, model, settings)
        return _generate(args, model, settings, init)


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


def _generate(args: argparse.Namespace, model: Path, settings: SamplingSettings, init) -> int:
    from ldmkit.pipeline.output import save_result
    from ldmkit.pipeline.trajectory import save_trajectory

    pipe = _load_pipeline(args, model)
    result = pipe(args.prompt, settings, init_image=init, trajectory=args.trajectory,
                  trajectory_every=args.trajectory_every or 1, progress=not args.quiet)
    for note in result.notes:
        print(f"ldmkit: note: {note}", file=sys.stderr)
    for w in result.warnings:
        print(f"ldmkit: warning: {w}", file=sys.stderr)
    saved = save_result(result, args.out)
    for path in saved:
        print(path)
    if result.trajectory is not None and not result.trajectory.steps:
        print("ldmkit: note: no denoising step ran (--strength too small for --steps): no trajectory written",
              file=sys.stderr)
    elif result.trajectory is not None:
        for k, image_path in enumerate(saved):
            # named after the image just written; never over an existing file either
            for path in save_trajectory(result.trajectory, args.out, image_path.stem, k, final=result.images[k]):
                print(path)
    return 0


def _generate_prompts(args: argparse.Namespace, model: Path, settings: SamplingSettings, prompts: list[str]) -> int:
    """--prompts FILE: image k of every prompt uses seed + k, as for one prompt; sampled --batch at a time
    (fewer when the memory estimate says so)."""
    import itertools

    from ldmkit.pipeline.output import save_result

    pipe = _load_pipeline(args, model)
    one = dataclasses.replace(settings, num_images=1)
    jobs = ((prompt, seed) for prompt in prompts for seed in settings.seeds())  # lazy: never one giant list
    warned: set[str] = set()
    while chunk := list(itertools.islice(jobs, args.batch)):
        results = pipe.generate_batch([prompt for prompt, _ in chunk], [seed for _, seed in chunk], one,
                                      progress=not args.quiet)
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
    pipe = Pipeline.from_pretrained(model, allow_pickle=args.allow_pickle, preset=args.preset,
                                    unet_dtype=torch.bfloat16 if args.fast else None, compile=args.compile)
    for path, scale in lora_specs(args.lora):
        for w in pipe.load_lora(path, scale):
            print(f"ldmkit: warning: {w}", file=sys.stderr)
    for path, token in embedding_specs(args.embedding, allow_pickle=args.allow_pickle):
        token = pipe.load_embedding(path, token, allow_pickle=args.allow_pickle)
        print(f"ldmkit: note: embedding {path.name} loaded as {token}", file=sys.stderr)
    return pipe


def _quiet_loading() -> None:
    """No "Loading weights" progress bars from transformers / diffusers (--quiet)."""
    import diffusers
    import transformers

    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()


def _generate_best_of(args: argparse.Namespace, model: Path, settings: SamplingSettings) -> int:
    """--best-of N: image k keeps the best of candidates seed + k*N .. seed + k*N + N - 1."""
    from ldmkit.models.dual_encoder import CLIP_FOLDER, load_dual_encoder

    if not (model / CLIP_FOLDER).is_dir():
        raise ModelFolderError(f"--best-of reranks with the model's dual encoder, but {model} has no {CLIP_FOLDER}/ "
                               "folder; train one with `ldmkit train clip` or drop --best-of")
    from ldmkit.pipeline.output import save_image
    from ldmkit.pipeline.rerank import rerank_best_of

    dual = load_dual_encoder(model)
    pipe = _load_pipeline(args, model)
    fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
              if f.name not in ("seed", "num_images")}
    for k in range(args.n):
        result = rerank_best_of(pipe, dual, args.prompt, args.best_of, seed=settings.seed + k * args.best_of,
                                progress=not args.quiet, **fields)
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
