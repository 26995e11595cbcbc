"""`ldmkit model init` / `ldmkit model info` through cli.main(argv)."""

import json
import subprocess
import sys

from ldmkit.cli import main
from ldmkit.models import load_components, model_hash


def test_init_then_info(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["model", "init", "--preset", "tiny", "--seed", "5", str(out)]) == 0
    c = load_components(out)
    assert c.meta["preset"] == "tiny" and c.meta["seed"] == 5
    capsys.readouterr()

    assert main(["model", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["hash"] == model_hash(out)
    assert info["latent_shape"] == list(c.latent_shape()) == [4, 16, 16]
    assert info["parameters"]["unet"] == sum(p.numel() for p in c.unet.parameters())
    assert info["scheduler"]["_class_name"] == "PNDMScheduler"
    assert info["text_encoder"]["kind"] == "clip"

    assert main(["model", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert info["hash"] in text and "PNDMScheduler" in text


def test_init_refuses_non_empty_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["model", "init", "--preset", "tiny", str(tmp_path)]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_info_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["model", "info", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_does_not_import_torch():
    code = "import sys; from ldmkit.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
