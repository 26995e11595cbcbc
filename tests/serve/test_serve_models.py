"""Several served models: `--models-dir` discovery, the LRU of loaded pipelines (`--max-loaded`), and
GET /api/v1/capabilities (the web page builds its form from it)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from ldmkit.cli import main  # noqa: E402
from ldmkit.cli.serve import model_names  # noqa: E402
from ldmkit.errors import UsageError  # noqa: E402
from ldmkit.serve.models import ModelPool, discover  # noqa: E402


def fake_models(root):
    (root / "alpha").mkdir(parents=True)
    (root / "alpha" / "model_index.json").write_text("{}")
    (root / "beta.safetensors").write_bytes(b"")
    (root / "gamma").mkdir()  # no model_index.json: not a model
    (root / "notes.txt").write_text("x")
    (root / "old.ckpt").write_bytes(b"")  # a pickle: never served
    (root / ".cache").mkdir()
    return root


def test_discover_names_folders_and_safetensors_files(tmp_path):
    found, skipped = discover(fake_models(tmp_path / "models"))
    assert found == {"alpha": tmp_path / "models" / "alpha", "beta": tmp_path / "models" / "beta.safetensors"}
    assert skipped == ["gamma", "notes.txt", "old.ckpt"]
    (tmp_path / "models" / "alpha.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match="both be served as 'alpha'"):
        discover(tmp_path / "models")
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "missing", tmp_path / "models" / "notes.txt"):
        with pytest.raises(UsageError, match="--models-dir"):
            discover(bad)


def test_cli_merges_model_and_models_dir(tmp_path, capsys):
    models = fake_models(tmp_path / "models")
    (tmp_path / "first").mkdir()
    assert list(model_names([tmp_path / "first"], models)) == ["first", "alpha", "beta"]  # --model is the default
    assert "gamma" in capsys.readouterr().err  # what was not served is said
    assert list(model_names(None, models)) == ["alpha", "beta"]
    assert list(model_names([models / "beta.safetensors"], models)) == ["beta", "alpha"]  # the default, once
    (tmp_path / "other" / "alpha").mkdir(parents=True)
    with pytest.raises(UsageError, match="the name of --model"):
        model_names([tmp_path / "other" / "alpha"], models)
    data = tmp_path / "data"
    capsys.readouterr()
    for argv in (["--models-dir", str(tmp_path / "missing")], ["--models-dir", str(models), "--max-loaded", "0"],
                 ["--models-dir", str(models), "--max-loaded", "65"]):
        assert main(["serve", *argv, "--data-dir", str(data)]) == 2
        err = capsys.readouterr().err
        assert err.splitlines()[-1].startswith("ldmkit: error:") and "Traceback" not in err, err
    assert not data.exists()  # refused before anything was written


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name, seed in (("one", 0), ("two", 1), ("three", 2)):
        assert main(["model", "init", "--preset", "tiny", "--seed", str(seed), str(root / name)]) == 0
    return root


@pytest.mark.slow
def test_pool_keeps_the_most_recently_used_models(tiny_models):
    from ldmkit.pipeline.settings import SamplingSettings

    models, _ = discover(tiny_models)
    pool = ModelPool(models, max_loaded=2)
    one = pool.get("one")
    assert pool.get("one") is one and pool.defaults("two") is None
    assert pool.check("two", SamplingSettings(steps=3)) is None  # not loaded: checked when its job runs
    pool.get("two")
    pool.get("one")  # used again: "two" is now the least recently used
    pool.get("three")
    assert pool.loaded_names() == ["one", "three"] and pool.get("one") is one
    assert pool.get("two") is not None and pool.loaded_names() == ["one", "two"]
    assert pool.defaults("one")["width"] == one.components.image_size  # kept after it was dropped
    assert pool.check("two", SamplingSettings(steps=3)).steps == 3
    with pytest.raises(UsageError, match="height 33"):
        pool.check("one", SamplingSettings(width=32, height=33))
    for bad in (0, 65, True, "2"):
        with pytest.raises(UsageError, match="--max-loaded"):
            ModelPool(models, max_loaded=bad)


@pytest.mark.slow
def test_server_serves_every_model_of_models_dir(tiny_models, tmp_path):
    from .serve_fixtures import Server

    srv = Server(tiny_models / "one", tmp_path / "data", "--models-dir", str(tiny_models), "--max-loaded", "1")
    srv.start()
    try:
        caps = srv.request("GET", "/api/v1/capabilities")[1]
        assert caps["models"] == [{"name": "one", "default": True}, {"name": "three", "default": False},
                                  {"name": "two", "default": False}]
        assert caps["loaded_models"] == ["one"] and caps["model_defaults"]["two"] is None
        assert caps["img2img"] is True and caps["preview"] is True and "euler" in caps["samplers"]
        d = caps["defaults"]
        assert {"steps", "guidance", "sampler", "width", "height", "size_multiple", "strength"} <= set(d)
        assert d["sampler"] in caps["samplers"] and d["width"] % d["size_multiple"] == 0
        limits = caps["limits"]
        for key in ("max_width", "max_height", "max_steps", "max_images_per_request", "max_body_bytes",
                    "max_body_bytes_with_image", "max_pixels", "max_upload_bytes", "max_upload_pixels"):
            assert isinstance(limits[key], int) and limits[key] > 0, key
        assert {"init_image", "strength", "preview_every", "model"} <= set(caps["fields"])
        hashes = {}
        for name in ("two", "one", "two"):  # --max-loaded 1: each switch reloads
            job = srv.wait(srv.submit(prompt="a red circle", model=name, steps=2), timeout=120)
            assert job["status"] == "succeeded" and job["model"] == name, job
            hashes.setdefault(name, set()).add(job["model_hash"])
        assert len(hashes["two"]) == 1 and hashes["two"] != hashes["one"]  # really another model
        caps = srv.request("GET", "/api/v1/capabilities")[1]
        assert caps["loaded_models"] == ["two"] and caps["model_defaults"]["two"]["steps"] == d["steps"]
        status, value, _ = srv.request("POST", "/api/v1/jobs", {"prompt": "x", "model": "four"})
        assert status == 422 and value["detail"][0]["field"] == "model"
    finally:
        srv.kill()
