"""Issue 13, "one typed request, checked once": every bad sampling request is one `ldmkit: error:` line.

One row per bad input: the command, the exit code, a fragment of the message. Rows marked BEFORE_LOAD name a
model folder that does not exist: their own message (not "model folder ... does not exist") proves the check
ran before any model was looked at. No row may print a traceback or write an output folder.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from ldmkit.cli import main
from ldmkit.pipeline import limits

MISSING_MODEL = "{tmp}/no-such-model"


def png_with_header_size(path: Path, width: int, height: int) -> Path:
    """A ~70-byte PNG whose header claims width x height (its pixel data is absent): decoding it would
    allocate width * height * 3 bytes, so only a check on the header keeps it cheap."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from ldmkit.models.folder import save_components
    from ldmkit.models.presets import build_components

    path = tmp_path_factory.mktemp("models") / "tiny"
    save_components(build_components("tiny", seed=0), path)
    return path


@pytest.fixture
def files(tmp_path):
    """The files the rows refer to, as {name}: path."""
    (tmp_path / "a-file").write_text("not a folder")
    Image.new("RGB", (8, 8)).save(tmp_path / "init.png")
    (tmp_path / "not-an-image.png").write_bytes(b"hello")
    png_with_header_size(tmp_path / "huge-header.png", 9000, 9000)  # under Pillow's limit, over ours
    png_with_header_size(tmp_path / "bomb.png", 100_000, 100_000)  # over Pillow's own limit too
    (tmp_path / "latin1.txt").write_bytes(b"a caf\xe9\n")
    (tmp_path / "long.txt").write_text("a cat\n" + "b" * (limits.MAX_PROMPT_CHARS + 1) + "\n")
    (tmp_path / "ok.txt").write_text("a cat\n")
    return {"tmp": str(tmp_path), "file": str(tmp_path / "a-file"), "init": str(tmp_path / "init.png"),
            "txt": str(tmp_path / "not-an-image.png"), "huge": str(tmp_path / "huge-header.png"),
            "bomb": str(tmp_path / "bomb.png"), "latin1": str(tmp_path / "latin1.txt"),
            "long": str(tmp_path / "long.txt"), "ok": str(tmp_path / "ok.txt")}


TOO_LONG = "a" * (limits.MAX_PROMPT_CHARS + 1)

# (argv after `ldmkit`, exit code, message fragment); `--model {missing}` rows must fail before any model load
BEFORE_LOAD = [
    (["generate", "x", "--size", "0x64"], 2, "--size: width must be a positive number of pixels, got 0"),
    (["generate", "x", "--size", "64x0"], 2, "height must be a positive number of pixels, got 0"),
    (["generate", "x", "--size", "0"], 2, "width must be a positive number"),
    (["generate", "x", "--size", "4096x4096"], 2, "over the budget of 4194304 per image; pass --max-pixels"),
    (["generate", "x", "--size", "100000x100000"], 2, "--size 100000x100000 is 10000000000 pixels"),
    (["generate", "x", "--size", "99999999999x2"], 2, "expected WxH"),
    (["generate", "x", "--size=-64x64"], 2, "expected WxH"),
    (["generate", "x", "--size", "64x64", "--max-pixels", "4000"], 2, "over the budget of 4000"),
    (["generate", "x", "--max-pixels", "0"], 2, "--max-pixels must be >= 1"),
    (["generate", "x", "--steps", "0"], 2, "--steps must be in 1..1000, got 0"),
    (["generate", "x", "--steps", "1001"], 2, "--steps must be in 1..1000, got 1001"),
    (["generate", "x", "--guidance", "nan"], 2, "--guidance must be a finite number, got nan"),
    (["generate", "x", "--guidance", "inf"], 2, "--guidance must be a finite number, got inf"),
    (["generate", "x", "--guidance", "-2"], 2, "--guidance must be >= 0, got -2"),
    (["generate", "x", "--guidance-rescale", "nan"], 2, "--guidance-rescale must be a finite number"),
    (["generate", "x", "--guidance-rescale", "1.5"], 2, "--guidance-rescale must be in [0, 1]"),
    (["generate", "x", "--strength", "0.5"], 2, "--strength has no effect without --init-image"),
    (["generate", "x", "--init-image", "{init}", "--strength", "1.5"], 2, "--strength must be in [0, 1], got 1.5"),
    (["generate", "x", "--init-image", "{init}", "--strength", "-0.1"], 2, "--strength must be in [0, 1]"),
    (["generate", "x", "--init-image", "{init}", "--strength", "nan"], 2, "--strength must be a finite number"),
    (["generate", "x", "--seed", "-2"], 2, "--seed must be in 0..2^64-1 (or -1 for a random seed), got -2"),
    (["generate", "x", "--seed", str(2**64)], 2, "--seed must be in 0..2^64-1"),
    (["generate", "x", "--seed", str(2**64 - 1), "--n", "2"], 2, "would pass 2^64-1"),
    (["generate", "x", "--n", "0"], 2, "--n must be in 1..10000, got 0"),
    (["generate", "x", "--n", "10000000000000"], 2, "--n must be in 1..10000"),
    (["generate", "x", "--n", "5000", "--best-of", "4"], 2, "--n must be in 1..10000, got 20000"),
    (["generate", TOO_LONG], 2, "prompt has 4001 characters; at most 4000"),
    (["generate", "x", "--negative", TOO_LONG], 2, "negative prompt has 4001 characters"),
    (["generate", "a \udcff cat"], 2, "prompt is not valid UTF-8 text"),
    (["generate", "x", "--negative", "\ud800"], 2, "negative prompt is not valid UTF-8 text"),
    (["generate", "x", "--sampler", "nope"], 2, "unknown sampler 'nope'"),
    (["generate", "x", "--sampler", "ddim", "--karras"], 2, "--karras does not apply to sampler 'ddim'"),
    (["generate", "x", "--timestep-spacing", "sideways"], 2, "invalid choice: 'sideways'"),
    (["generate", "x", "--trajectory-every", "2"], 2, "needs --trajectory"),
    (["generate", "x", "--trajectory", "--trajectory-every", "0"], 2, "--trajectory-every must be >= 1"),
    (["generate", "x", "--best-of", "0"], 2, "--best-of must be >= 1"),
    (["generate", "x", "-o", "{file}"], 2, "exists and is not a folder"),
    (["generate", "x", "-o", "{file}/sub"], 2, "is a file, so the folder cannot be created"),
    (["generate", "x", "--init-image", "{tmp}/missing.png"], 2, "cannot read init image"),
    (["generate", "x", "--init-image", "{txt}"], 2, "cannot identify"),
    (["generate", "x", "--init-image", "{huge}"], 2, "9000x9000 = 81000000 pixels is over the limit of 67108864"),
    (["generate", "x", "--init-image", "{bomb}"], 2, "cannot read init image"),
    (["generate", "--prompts", "{latin1}"], 2, "line 1: not UTF-8 text"),
    (["generate", "--prompts", "{long}"], 2, "prompt 2 has 4001 characters"),
    (["generate", "--prompts", "{ok}", "--batch", "0"], 2, "--batch must be >= 1"),
    (["generate", "--prompts", "{ok}", "--batch", "100000"], 2, "at most 10000"),
    (["eval", "{missing}", "--data", "{tmp}", "-o", "{tmp}/e", "--guidance", "nan"], 2,
     "--guidance must be a finite number"),
    (["eval", "{missing}", "--data", "{tmp}", "-o", "{tmp}/e", "--steps", "0"], 2, "--steps must be in 1..1000"),
    (["eval", "{missing}", "--data", "{tmp}", "-o", "{tmp}/e", "--sweep", "guidance=1,inf"], 2,
     "--guidance must be a finite number, got inf"),
    (["eval", "{missing}", "--data", "{tmp}", "-o", "{tmp}/e", "--sweep", "steps=5,0"], 2, "--steps must be in"),
    (["eval", "{missing}", "--data", "{tmp}", "-o", "{tmp}/e", "--sweep", "sampler=euler,nope"], 2,
     "unknown sampler 'nope'"),
    (["eval", "{missing}", "--data", "{tmp}", "-o", "{tmp}/e", "--guidance-rescale", "1.5"], 2,
     "--guidance-rescale must be in [0, 1]"),
    (["eval", "{missing}", "--data", "{tmp}", "-o", "{tmp}/e", "--sweep", "guidance_rescale=0,nan"], 2,
     "--guidance-rescale must be a finite number"),
    (["eval", "{missing}", "--data", "{tmp}", "-o", "{tmp}/e", "--sampler", "ddim", "--karras"], 2,
     "--karras does not apply to sampler 'ddim'"),
    # what does pass every check reaches the model folder: the control that the rows above stop earlier
    (["generate", "x", "--seed", "-1", "--size", "64x64", "--karras", "--timestep-spacing", "trailing"], 2,
     "does not exist"),
]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exit_:  # argparse's own errors (invalid choice, not an integer)
        rc = exit_.code
    return rc, capsys.readouterr().err


def fill(argv: list[str], files: dict, model: str) -> list[str]:
    return [a.format(missing=model, **files) if "{" in a else a for a in argv]


@pytest.mark.parametrize("argv,code,message", BEFORE_LOAD, ids=[" ".join(r[0])[:60] for r in BEFORE_LOAD])
def test_bad_request_is_one_clear_line_before_any_model_loads(argv, code, message, files, capsys):
    out = Path(files["tmp"]) / "out"
    model = MISSING_MODEL.format(tmp=files["tmp"])
    argv = fill(argv, files, model)
    if argv[0] == "generate":
        argv += ["--model", model] + ([] if "-o" in argv else ["-o", str(out)])
    rc, err = run_cli(argv, capsys)
    assert rc == code
    assert message in err
    assert "Traceback" not in err
    if argv[0] == "generate" and "does not exist" not in message:
        assert "no-such-model" not in err  # refused before the model folder was even looked at
    assert not out.exists() and not (Path(files["tmp"]) / "e").exists()


AFTER_LOAD = [  # checks that need the model (its VAE factor, its size)
    (["--size", "33x32"], "width 33 is not a positive multiple of the VAE factor 2"),
    (["--size", "32x33"], "height 33 is not a positive multiple of the VAE factor 2"),
]


@pytest.mark.parametrize("argv,message", AFTER_LOAD)
def test_model_dependent_checks_are_clear_and_write_nothing(argv, message, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = run_cli(["generate", "x", "--model", str(tiny_model), "-o", str(out), "--quiet", *argv], capsys)
    assert rc == 2 and message in err and "Traceback" not in err
    assert not out.exists()


def test_unwritable_output_folder_is_refused_before_generation(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as a user who may write anywhere (root): permission bits do not apply")
    rc, err = run_cli(["generate", "x", "--model", str(tmp_path / "none"), "-o", str(locked / "out")], capsys)
    assert rc == 2 and "no permission to write in" in err


MEMORY_LIMIT = 1 << 30  # 1 GiB of address space: a 100000x100000 image (30 GB) could never be allocated
TOO_LARGE = [
    (["generate", "x", "--size", "100000x100000"], "over the budget"),
    (["generate", "x", "--size", "100000x100000", "--max-pixels", str(10**10), "--model", "{tmp}/none"],
     "does not exist"),  # the user raised the budget: the request is valid and stops at the missing model
    (["generate", "x", "--n", "1000000000000"], "--n must be in 1..10000"),
    (["generate", "x", "--init-image", "{huge}"], "over the limit of 67108864"),
    (["generate", "x", "--init-image", "{bomb}"], "cannot read init image"),
    (["generate", "a" * 1_000_000], "prompt has 1000000 characters"),
]


def test_too_large_requests_fail_cleanly_under_a_memory_limit(files):
    """In a process limited to 1 GiB of address space (where a real 30 GB allocation fails, checked first),
    every too-large request ends with its one-line error and no traceback."""
    rows = [fill(argv, files, "") + ["-o", files["tmp"] + "/out"] for argv, _ in TOO_LARGE]
    script = (
        "import resource, sys, json\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
        "try:\n    bytearray(30 * 2**30)\n    print('ALLOCATED', file=sys.stderr)\nexcept MemoryError:\n    pass\n"
        "from ldmkit.cli import main\n"
        "for argv in json.loads(sys.stdin.read()):\n"
        "    print('ROW', main(argv), file=sys.stderr, flush=True)\n")
    import json

    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(rows), capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "ALLOCATED" not in proc.stderr, "the memory limit did not stop a 30 GB allocation"
    assert "Traceback" not in proc.stderr and proc.returncode == 0, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ldmkit: error:")]
    assert proc.stderr.count("ROW 2") == len(rows) and len(errors) == len(rows), proc.stderr[-2000:]
    for (_, message), line in zip(TOO_LARGE, errors):
        assert message in line, line
    assert not Path(files["tmp"], "out").exists()


def test_undecodable_argv_bytes_are_one_line_in_a_real_process(tmp_path):
    """Bytes that are not UTF-8 in argv arrive as lone surrogates; the CLI says so in one line."""
    ldmkit = Path(sys.executable).parent / "ldmkit"
    proc = subprocess.run([ldmkit, "generate", b"a caf\xe9", "--model",
                           str(tmp_path / "none"), "-o", str(tmp_path / "out")], capture_output=True, timeout=120)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2 and "prompt is not valid UTF-8 text" in err and "Traceback" not in err
