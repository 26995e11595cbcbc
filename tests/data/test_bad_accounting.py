"""`data check` and `data stats` report bad files with one shared tally; names are escaped in text reports;
without matplotlib `data stats --out` writes nothing and training says once that loss plots are off."""

import json
import sys

from PIL import Image

from ldmkit.cli import main


def _dataset(root):
    root.mkdir()
    rows = []
    for i in range(4):
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(root / f"ok{i}.png")
        rows.append({"file_name": f"ok{i}.png", "text": [f"picture {i}", "   "]})  # one empty caption each
    (root / "zero\x1b[2J.png").write_bytes(b"")
    (root / "two\nlines.png").write_bytes(b"not an image")
    rows += [{"file_name": "zero\x1b[2J.png", "text": "a"}, {"file_name": "two\nlines.png", "text": "b"},
             {"file_name": "gone.png", "text": "c"}]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    return root


def test_check_and_stats_count_bad_files_the_same_way(tmp_path, capsys):
    root = _dataset(tmp_path / "ds")
    main(["data", "check", str(root), "--json"])
    check = json.loads(capsys.readouterr().out)
    main(["data", "stats", str(root), "--json"])
    stats = json.loads(capsys.readouterr().out)
    keys = ("unusable_images", "dropped_captions", "bad_fraction", "bad")
    assert {k: check[k] for k in keys} == {k: stats[k] for k in keys}
    # counted from the fixture: 3 images unusable (empty, not an image, missing) of 7; 4 empty captions + 1 bad line
    assert check["unusable_images"] == 3 and check["dropped_captions"] == 5
    assert abs(check["bad_fraction"] - 3 / 7) < 1e-6
    main(["data", "check", str(root), "--max-bad-fraction", "1"])
    check_text = capsys.readouterr().out
    main(["data", "stats", str(root)])
    stats_text = capsys.readouterr().out
    line = "unusable images: 3 (42.9%"
    assert line in check_text and line in stats_text and "dropped caption lines: 5" in stats_text


def test_control_characters_in_names_are_escaped_in_the_report(tmp_path, capsys):
    root = _dataset(tmp_path / "ds")
    main(["data", "check", str(root), "--max-bad-fraction", "1"])
    out = capsys.readouterr().out
    assert "zero\\x1b[2J.png" in out and "two\\nlines.png" in out
    assert "\x1b" not in out and not any(line.startswith("lines.png") for line in out.splitlines())


def test_stats_out_without_matplotlib_writes_nothing(tmp_path, capsys, monkeypatch):
    root = _dataset(tmp_path / "ds")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["data", "stats", str(root), "--out", str(tmp_path / "stats")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'ldmkit[data]'" in err
    assert not (tmp_path / "stats").exists()


def test_training_without_matplotlib_says_once_that_plots_are_off(tmp_path, capsys, monkeypatch):
    from ldmkit.training import progress

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3)))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(progress, "_PLOTS_OFF_SAID", [])
    for _ in range(3):
        progress.plot_loss_curve(metrics, tmp_path / "loss.png")
    err = capsys.readouterr().err
    assert err.count("loss plots are off") == 1 and not (tmp_path / "loss.png").exists()
