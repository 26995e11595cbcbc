"""`ldmkit data check|stats|build|preview`, called as functions (the CLI only parses and prints)."""

import argparse
import json
import subprocess
import sys

import pytest
from PIL import Image

from ldmkit.cli import data as cli_data


def run(argv):
    parser = argparse.ArgumentParser(prog="ldmkit")
    cli_data.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def make(root, bad=0, good=4):
    root.mkdir()
    lines = []
    for i in range(good):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": [f"image {i}", f"picture {i}"]}))
    for i in range(bad):
        (root / f"bad{i}.png").write_bytes(b"")
        lines.append(json.dumps({"file_name": f"bad{i}.png", "text": "empty"}))
    lines.append("{broken")
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_check_json_exact_keys_and_exit_status(tmp_path, capsys):
    root = make(tmp_path / "ds", bad=1, good=30)
    assert run(["data", "check", str(root), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert list(answer)[:4] == ["format", "images", "captions", "bad"]
    assert answer["format"] == "imagefolder" and answer["images"] == 30 and answer["captions"] == 60
    assert answer["bad"] == {"malformed_line": 1, "zero_byte": 1}
    assert answer["examples"]["malformed_line"][0] == {"file": "metadata.jsonl", "line": 32,
                                                       "detail": answer["examples"]["malformed_line"][0]["detail"]}
    assert run(["data", "check", str(root), "--json", "--max-bad-fraction", "0.01"]) == 1


def test_check_human_report(tmp_path, capsys):
    root = make(tmp_path / "ds", bad=2, good=2)
    assert run(["data", "check", str(root)]) == 1  # 2 of 4 unusable
    out = capsys.readouterr().out
    assert "zero_byte: 2" in out and "metadata.jsonl:5" in out and "NOT usable" in out


def test_stats_writes_plots(tmp_path, capsys):
    root = make(tmp_path / "ds")
    assert run(["data", "stats", str(root), "--out", str(tmp_path / "stats")]) == 0
    assert "captions per image: min 2" in capsys.readouterr().out
    assert (tmp_path / "stats" / "stats.json").is_file() and (tmp_path / "stats" / "caption_length.png").is_file()


def test_build_and_preview_call_the_builtin_functions(tmp_path, monkeypatch, capsys):
    import ldmkit.data.builtin as builtin
    import ldmkit.data.preview as preview

    calls = []
    monkeypatch.setattr(builtin, "build_dataset",
                        lambda name, out, **kw: calls.append((name, out, kw)) or {"images": 3, "captions": 6})
    monkeypatch.setattr(preview, "preview_dataset",
                        lambda root, out, **kw: calls.append((root, out, kw)) or out)
    assert run(["data", "build", "shapes", str(tmp_path / "s"), "--n", "3", "--seed", "4"]) == 0
    assert run(["data", "preview", str(tmp_path / "s"), "-o", str(tmp_path / "p.png"), "--n", "2"]) == 0
    assert run(["data", "preview", str(tmp_path / "s"), "-o", str(tmp_path / "q.png"), "--no-trim",
                "--focus", "centre"]) == 0
    preview_defaults = {"policy": "crop", "focus": "auto", "trim": True}
    assert calls == [("shapes", tmp_path / "s", {"n": 3, "seed": 4, "size": 64, "phrasings": 0,
                                                 "emoji_aliases": False, "phrasing_colours": False,
                                                 "phrasing_words": "train"}),
                     (tmp_path / "s", tmp_path / "p.png", {"n": 2, "size": 64, **preview_defaults}),
                     (tmp_path / "s", tmp_path / "q.png", {"n": 16, "size": 64, "policy": "crop", "focus": "centre",
                                                          "trim": False})]
    assert "3 images" in capsys.readouterr().out


def test_preview_frames_a_built_in_folder_as_training_would(tmp_path, monkeypatch, capsys):
    import ldmkit.data.preview as preview
    from ldmkit.data.builtin.card import CARD_NAME

    trims = []
    monkeypatch.setattr(preview, "preview_dataset", lambda root, out, **kw: trims.append(kw["trim"]) or out)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / CARD_NAME).write_text(json.dumps({"name": "shapes"}))
    out = str(tmp_path / "p.png")
    for flags in ([], ["--trim"], ["--no-trim"]):
        assert run(["data", "preview", str(tmp_path / "s"), "-o", out, *flags]) == 0
    assert trims == [False, True, False]
    assert capsys.readouterr().out.count("border trim off: the built-in dataset's training default") == 1
    with pytest.raises(SystemExit):
        run(["data", "preview", str(tmp_path / "s"), "--trim", "--no-trim"])


def test_unknown_format_is_refused_by_the_parser(tmp_path):
    with pytest.raises(SystemExit):
        run(["data", "check", str(tmp_path), "--format", "parquet"])


def test_cli_module_does_not_import_torch():
    code = "import sys, ldmkit.cli.data; print('torch' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
