"""`ldmkit serve`: the HTTP API with a persistent job queue (parsing and printing only; ldmkit.serve does the work)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldmkit.cli.threads_option import add_threads_option
from ldmkit.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("serve", help="HTTP API: a persistent job queue over one or more models",
                       description="Serve the native job API under /api/v1 (jobs, images, progress events, "
                                   "capabilities, health). Jobs and images persist in --data-dir; a restart "
                                   "resumes the queue. Bound to 127.0.0.1 unless --host and --token are given.")
    p.add_argument("--model", type=Path, action="append", metavar="DIR_OR_FILE",
                   help="a model to serve (repeatable; the first is the default; named after its folder or file). "
                        "Default: the shipped default model, named 'default' (unless --models-dir gives models)")
    p.add_argument("--models-dir", type=Path, metavar="DIR",
                   help="also serve every model in DIR: folders with model_index.json (named by the folder) and "
                        ".safetensors checkpoints (named by the file stem); the first --model (which may be one of "
                        "DIR's), else the first by name, is the default")
    p.add_argument("--max-loaded", type=int, default=2, metavar="N",
                   help="models kept loaded at once; the least recently used is dropped (default 2)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    p.add_argument("--data-dir", type=Path, default=Path("ldmkit-server"), metavar="DIR",
                   help="job database and images (default ./ldmkit-server)")
    p.add_argument("--token", metavar="TOKEN",
                   help="require 'Authorization: Bearer TOKEN' on every request (required with a non-loopback --host)")
    p.add_argument("--max-queue", type=int, default=256, metavar="N",
                   help="images that may wait in the queue (default 256); a request that does not fit whole gets "
                        "HTTP 429, never a shortened batch")
    p.add_argument("--batch", type=int, default=16, metavar="B",
                   help="images sampled together at most: compatible queued jobs are batched (default 16)")
    p.add_argument("--fast", action="store_true",
                   help="bf16 UNet + torch.compile; the default model is compiled at start for its own size and "
                        "one image (other sizes and batch sizes compile when first used)")
    add_threads_option(p)
    p.set_defaults(func=run_serve)


def model_names(paths: list[Path] | None, models_dir: Path | None = None) -> dict[str, Path]:
    """Served name -> path: each --model, then the models of --models-dir (ldmkit.serve.models.discover), each
    named by its folder or file name (without .safetensors); 'default' for the shipped model when neither is given."""
    from ldmkit.cli.generate import resolve_model

    if not paths and models_dir is None:
        return {"default": resolve_model(None)}
    models: dict[str, Path] = {}
    for path in paths or []:
        name = path.resolve().stem if path.is_file() else path.resolve().name
        if name in models:
            raise UsageError(f"--model {path}: two models would both be called {name!r}; rename a folder")
        models[name] = resolve_model(path)
    if models_dir is not None:
        from ldmkit.serve.models import discover

        found, skipped = discover(models_dir)
        for name, path in found.items():
            if name in models and models[name].resolve() == path.resolve():
                continue  # --model picked the default among the folder's models
            if name in models:
                raise UsageError(f"--models-dir {models_dir}: {path.name} would be served as {name!r}, the name of "
                                 f"--model {models[name]}; rename one")
            models[name] = path
        if skipped:
            print(f"ldmkit: note: --models-dir {models_dir}: not served (not a model folder or .safetensors file): "
                  f"{', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}", file=sys.stderr)
    return models


def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401  (checked here: a missing extra is one line, not a traceback)

        from ldmkit.serve.app import ServerConfig
    except ImportError as err:
        raise UsageError(f"ldmkit serve needs the 'serve' extra ({err.name} is missing): "
                         "pip install -e '.[serve]'") from None
    if args.data_dir.exists() and not args.data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: exists and is not a folder")
    config = ServerConfig(data_dir=args.data_dir, models=model_names(args.model, args.models_dir), host=args.host,
                          port=args.port, token=args.token, max_queue=args.max_queue, batch_images=args.batch,
                          fast=args.fast, max_loaded=args.max_loaded)
    return serve(config)


def serve(config) -> int:
    """Recover the store, load the default model, then run uvicorn until interrupted."""
    import uvicorn

    from ldmkit.serve.app import create_app
    from ldmkit.serve.events import EventHub
    from ldmkit.serve.store import JobStore
    from ldmkit.serve.worker import Worker

    from ldmkit.serve.uploads import clean_uploads

    store = JobStore(config.data_dir)
    found = store.recover()
    found["removed_files"] += clean_uploads(config.data_dir, store.upload_ids())
    if found["integrity"] != "ok":
        print(f"ldmkit: warning: job database integrity check: {found['integrity']}", file=sys.stderr)
    if found["requeued"] or found["interrupted"] or found["removed_files"]:
        print(f"ldmkit: note: after an unclean stop: {found['requeued']} job(s) requeued, {found['interrupted']} "
              f"interrupted, {found['removed_files']} partial or unlisted file(s) removed", file=sys.stderr)
    hub = EventHub()
    worker = Worker(store, hub, config.models, batch_images=config.batch_images, max_loaded=config.max_loaded,
                    fast=config.fast)
    pipe = worker.pool.get(next(iter(config.models)))  # load the default model before accepting jobs
    if config.fast:  # compile now, at the model's size and one image (other shapes compile on first use)
        pipe.generate_batch(["warm-up"], [0], steps=2)
    app = create_app(config, store, hub, worker)
    print(f"ldmkit: serving {', '.join(config.models)} on http://{config.host}:{config.port}/api/v1 "
          f"(data in {config.data_dir})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5)  # open event streams do not hold up a Ctrl+C for long
    store.close()
    return 0
