"""Live x0 previews: which images are decoded when, the JPEG data URL, the event hub's bounded memory, and
through a real server: the preview at the last step is the finished image (euler: x_N is the last x0)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")

from PIL import Image  # noqa: E402

from ldmkit.serve.events import KEEP_PREVIEWS, EventHub  # noqa: E402
from ldmkit.serve.previews import MAX_IMAGES, MAX_SIDE, Previews, data_url  # noqa: E402


def image_of(url: str) -> Image.Image:
    head, _, payload = url.partition(",")
    assert head == "data:image/jpeg;base64"
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert image.format == "JPEG"
    return image


def test_previews_decode_only_the_due_jobs_rows_in_one_call():
    decoded = []

    def decode(x0):  # stands in for pipe.decode: [n, 4, h, w] latents -> [n, 3, h, w] pixels in [-1, 1]
        decoded.append(x0.shape[0])
        return x0[:, :3].clamp(-1, 1)

    owners = ["a"] * 6 + ["b"] * 2 + ["c"]
    previews = Previews(decode, owners, {"a": 2, "b": 3, "c": 0})
    x0 = torch.linspace(-1, 1, 9).view(9, 1, 1, 1).expand(9, 4, 8, 8)
    previews(1, 6, range(0, 9), x0)
    assert decoded == [] and previews.take("a") == {}
    previews(2, 6, range(0, 9), x0)  # a is due: its first MAX_IMAGES images, side by side
    assert decoded == [MAX_IMAGES] and previews.take("b") == {} and previews.take("c") == {}
    got = previews.take("a")
    assert got["preview_step"] == 2 and image_of(got["preview"]).size == (8 * MAX_IMAGES, 8)
    assert previews.take("a") == {}  # handed out once
    previews(6, 6, range(4, 9), x0[4:])  # a later run of the batch: rows 4..8; both a and b are due
    assert decoded[-1] == 4  # a's rows 4, 5 and b's 6, 7; never c's
    assert image_of(previews.take("b")["preview"]).size == (16, 8)
    assert image_of(previews.take("a")["preview"]).size == (16, 8)
    assert not Previews(decode, owners, {"a": 0})  # nobody asked: the worker passes no hook


def test_data_url_shrinks_to_the_preview_size_and_keeps_the_picture():
    left, right = Image.new("RGB", (600, 300), (250, 0, 0)), Image.new("RGB", (300, 300), (0, 0, 250))
    image = image_of(data_url([left, right]))
    assert image.size == (MAX_SIDE, MAX_SIDE * 300 // 900)
    pixels = np.asarray(image, dtype=int)
    assert pixels[40, 20, 0] > 200 and pixels[40, -20, 2] > 200  # red on the left, blue on the right


def test_hub_keeps_the_latest_preview_per_job_and_bounds_memory():
    hub = EventHub()
    hub.publish("j", "step", step=2, steps=9, preview="data:image/jpeg;base64,AAAA", preview_step=2)
    hub.publish("j", "step", step=3, steps=9)
    (last,) = hub.since("j", 0)
    assert last["step"] == 3 and last["preview_step"] == 2 and last["preview"].endswith("AAAA")
    assert all("preview" not in e for e in hub.since_all(0))  # the queue-wide stream: no image data
    assert hub.since_all(0)[-1]["preview_step"] == 2
    hub.publish("j", "step", step=4, steps=9, preview="data:image/jpeg;base64,BBBB", preview_step=4)
    assert hub.since("j", 0)[-1]["preview"].endswith("BBBB")
    hub.publish("j", "succeeded", images=[])
    assert hub.since("j", 0)[0]["preview"].endswith("BBBB")  # kept for a reader arriving just after the end
    for k in range(KEEP_PREVIEWS):
        hub.publish(f"other{k}", "step", step=1, steps=1, preview="x", preview_step=1)
        hub.publish(f"other{k}", "succeeded", images=[])
    assert "preview" not in hub.since("j", 0)[0]  # past KEEP_PREVIEWS finished jobs: dropped
    assert hub.since(f"other{KEEP_PREVIEWS - 1}", 0)[0]["preview"] == "x"


# -- through a real server -------------------------------------------------------------------------------


def stream(srv, job_id: str, timeout: float = 120) -> list[dict]:
    """Every event of the job's SSE stream up to its end."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    conn.request("GET", f"/api/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {srv.token}"})
    resp, seen = conn.getresponse(), []
    try:
        while True:
            line = resp.readline().decode()
            if not line:
                return seen
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["event"] in ("succeeded", "failed", "cancelled"):
                    return seen
    finally:
        conn.close()


@pytest.mark.slow
def test_server_previews_every_k_steps_end_at_the_finished_image(tmp_path):
    from ldmkit.cli import main

    from .serve_fixtures import Server

    model = tmp_path / "tiny"
    assert main(["model", "init", "--preset", "tiny", str(model)]) == 0
    srv = Server(model, tmp_path / "data").start()
    try:
        hold = srv.submit(prompt="hold the worker", steps=900)
        steps, every = 12, 3
        seen = srv.submit(prompt="a red circle", steps=steps, sampler="euler", num_images=2, seed=4,
                          preview_every=every)
        plain = srv.submit(prompt="a blue square", steps=steps, sampler="euler", seed=9)  # same batch, no previews
        status, value, _ = srv.request("POST", "/api/v1/jobs", {"prompt": "x", "steps": 4, "preview_every": 5})
        assert status == 422 and value["detail"][0]["field"] == "preview_every"
        with ThreadPoolExecutor(2) as pool:  # both streams open before the batch starts
            readers = [pool.submit(stream, srv, j) for j in (seen, plain)]
            time.sleep(1.0)
            srv.request("POST", f"/api/v1/jobs/{hold}/cancel")
            events, plain_events = (r.result() for r in readers)
        assert "Traceback" not in open(srv.log.name, errors="replace").read()
        shown = [e for e in events if e["event"] == "step" and "preview" in e]
        assert shown and all(e["preview_step"] % every == 0 for e in shown)
        last = shown[-1]
        assert last["preview_step"] == steps and last["step"] == steps
        job = srv.wait(seen)
        assert job["timings"]["batch_images"] == 3  # both jobs sampled together
        plain_steps = [e for e in plain_events if e["event"] == "step"]
        assert plain_steps and all("preview" not in e for e in plain_steps)
        finals = [Image.open(io.BytesIO(srv.request("GET", i["url"])[1])).convert("RGB") for i in job["images"]]
        preview = np.asarray(image_of(last["preview"]).convert("RGB"), dtype=float)
        assert preview.shape == (finals[0].height, 2 * finals[0].width, 3)  # the job's 2 images, side by side
        # the reference: the finished images through the same JPEG encoding (random-weight images are all
        # fine detail, which JPEG blurs, so the raw images differ from any JPEG of them by ~20 levels)
        same = np.abs(preview - np.asarray(image_of(data_url(finals)), dtype=float)).mean()
        swapped = np.abs(preview - np.asarray(image_of(data_url(finals[::-1])), dtype=float)).mean()
        assert same < 2 and swapped > 10, (same, swapped)  # the rows are not mixed up either
    finally:
        srv.kill()
