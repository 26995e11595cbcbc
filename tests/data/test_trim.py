"""standardize() against subjects whose boxes are known, plus the preview sheet."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ldmkit.data import trim
from ldmkit.data.trim import standardize
from ldmkit.errors import UsageError

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "trim_vs_centre.py"


def _bench():
    spec = importlib.util.spec_from_file_location("trim_vs_centre", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scene(w, h, box, background=(255, 255, 255), colour=(200, 20, 20)):
    img = Image.new("RGB", (w, h), background)
    ImageDraw.Draw(img).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=colour)
    return img


def test_uniform_border_is_trimmed_to_the_subject_box():
    box = (130, 20, 190, 70)
    out, record = standardize(_scene(300, 100, box), 32)
    assert record.trim_box == box
    assert record.background == (255, 255, 255)
    assert out.size == (32, 32)


@pytest.mark.parametrize("size", [32, (48, 24), (24, 48)])
def test_crop_box_has_target_aspect_and_stays_inside_the_trim_box(size):
    rng = np.random.default_rng(0)
    noise = Image.fromarray((rng.random((90, 200, 3)) * 80 + 80).astype(np.uint8))
    ImageDraw.Draw(noise).ellipse([150, 30, 190, 70], fill=(0, 0, 255))
    out, record = standardize(noise, size)
    w, h = (size, size) if isinstance(size, int) else size
    left, top, right, bottom = record.crop_box
    assert out.size == (w, h)
    assert abs((right - left) / (bottom - top) - w / h) < 0.05
    t = record.trim_box
    assert t[0] <= left and t[1] <= top and right <= t[2] and bottom <= t[3]


def test_saliency_crop_keeps_an_off_centre_subject_a_centre_crop_loses():
    rng = np.random.default_rng(1)
    pixels = (rng.random((100, 300, 3)) * 60 + 100).astype(np.uint8)
    img = Image.fromarray(pixels)
    ImageDraw.Draw(img).rectangle([230, 30, 279, 69], fill=(250, 200, 0))
    _, record = standardize(img, 64)
    assert record.reason == "saliency" and record.background is None
    left, top, right, bottom = record.crop_box
    assert left <= 230 and right >= 280  # the whole subject is kept
    _, centred = standardize(img, 64, focus="centre")
    assert centred.reason == "centre" and centred.crop_box == (100, 0, 200, 100)


def test_pad_keeps_everything_and_fills_with_the_border_colour():
    img = _scene(120, 60, (0, 0, 120, 60), colour=(10, 120, 10))
    img.paste((240, 240, 240), (0, 0, 120, 4))  # make the border non-uniform: no trimming
    out, record = standardize(img, 40, policy="pad")
    assert record.reason == "pad" and record.crop_box == (0, -30, 120, 90)
    assert out.getpixel((20, 1)) == (255, 255, 255)  # outside the image: white when no uniform border
    assert out.getpixel((20, 20))[1] > 100


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse([10, 10, 30, 30], fill=(255, 0, 0, 255))
    _, record = standardize(rgba, 16)
    assert record.background == (255, 255, 255) and record.trim_box == (10, 10, 31, 31)


def test_without_opencv_faces_fall_back_to_saliency(monkeypatch):
    bench = _bench()
    image, mask, _ = bench.face_case(0)
    monkeypatch.setattr(trim, "_face_cascade", lambda: None)
    _, record = standardize(image, 64, focus="auto")
    assert record.reason in ("saliency", "centre")
    _, record = standardize(image, 64, focus="face")
    assert record.reason == "centre"


def test_faces_are_found_when_the_cascade_is_there():
    pytest.importorskip("cv2")
    if trim._face_cascade() is None:
        pytest.skip("this OpenCV build has no Haar cascades (OpenCV 5 dropped them)")
    bench = _bench()
    reasons = [standardize(bench.face_case(i)[0], 64, focus="face")[1].reason for i in range(10)]
    assert "face" in reasons


def test_ours_keeps_more_of_off_centre_subjects_than_a_centre_crop():
    table = _bench().run(n=30, faces=4, photos=0)
    ours = np.mean([row["ours"] for row in table.values()])
    centre = np.mean([row["centre"] for row in table.values()])
    assert ours > centre + 0.5


def test_photographs_keep_at_least_what_a_centre_crop_keeps():
    """Issue 12.7: 4:3 / 3:4 photo-like cases (plain, textured, off-centre, a person at the top edge)."""
    bench = _bench()
    table = bench.run(n=0, faces=0, photos=24)  # 2 of each of the 12 kinds (the benchmark runs 8 of each)
    assert len(table) == 12
    for kind, row in table.items():
        assert row["ours"] >= row["centre"] - 1e-9, (kind, row)
        assert row["worse"] == 0, (kind, row)
    # the failure that started it: a big subject on a plain backdrop was cut down to a square inside it
    assert table["photo/4:3/plain/large"]["ours"] > 0.9
    # and the head of a person at the top edge of a portrait survives (a centre crop cuts it)
    person = table["photo/3:4/plain/person-top"]
    assert person["ours"] > 0.95 > person["centre"] + 0.2


def test_policy_options():
    bench = _bench()
    image, mask, _ = bench.photo_case(10)  # 3:4, plain backdrop, head at the top edge
    _, auto = standardize(image, 32)
    _, centre = standardize(image, 32, focus="centre")
    assert bench.kept_fraction(mask, auto.crop_box) > bench.kept_fraction(mask, centre.crop_box) + 0.3
    assert centre.reason == "centre" and centre.crop_box == bench.centre_box(*image.size)
    # trim=False: a small subject on a plain backdrop is not zoomed into
    small = _scene(200, 100, (20, 40, 40, 60))
    _, trimmed = standardize(small, 16)
    _, untrimmed = standardize(small, 16, trim=False)
    assert trimmed.reason == "content" and trimmed.crop_box[2] - trimmed.crop_box[0] < 40
    assert untrimmed.trim_box == (0, 0, 200, 100) and untrimmed.crop_box[2] - untrimmed.crop_box[0] == 100
    _, padded = standardize(small, 16, policy="pad", trim=False)
    assert padded.crop_box == (0, -50, 200, 150)
    with pytest.raises(UsageError, match="no effect"):
        standardize(small, 16, policy="pad", focus="face")
    with pytest.raises(UsageError, match="trim"):
        standardize(small, 16, trim="yes")


def test_fill_fills_the_frame_with_the_subject_and_cuts_its_long_side():
    """fill = trim version 1's crop (what the shipped default model was trained on): the largest square inside
    the subject box, where crop keeps the whole subject with a margin."""
    img = _scene(200, 160, (40, 30, 160, 70))  # a 120 x 40 subject on white
    out, filled = standardize(img, 16, policy="fill")
    assert filled.trim_box == (40, 30, 160, 70) and filled.crop_box == (80, 30, 120, 70)  # 40 x 40, centred
    assert filled.reason == "centre" and np.asarray(out).mean(axis=(0, 1))[1] < 60  # all subject, no white
    _, cropped = standardize(img, 16)
    assert cropped.reason == "content" and cropped.crop_box[0] < 40 and cropped.crop_box[2] > 160
    # a subject with its salient part at one end: the window slides inside the box to keep it
    img = _scene(200, 160, (40, 30, 160, 70), colour=(235, 190, 190))  # pale, barely salient on white
    ImageDraw.Draw(img).rectangle([140, 30, 159, 69], fill=(0, 0, 0))
    _, slid = standardize(img, 16, policy="fill")
    assert slid.reason == "saliency" and slid.crop_box[2] == 160 and slid.crop_box[1] == 30
    _, centred = standardize(img, 16, policy="fill", focus="centre")
    assert centred.crop_box == (80, 30, 120, 70)
    # a subject that already has the target aspect is taken whole
    assert standardize(_scene(100, 100, (20, 30, 60, 70)), 16, policy="fill")[1].crop_box == (20, 30, 60, 70)
    assert trim.Standardizer(policy="fill").cache_id != trim.Standardizer().cache_id


def test_standardizer_names_its_policy_for_caches():
    a, b = trim.Standardizer(), trim.Standardizer(focus="centre")
    assert a.cache_id != b.cache_id and f"v{trim.TRIM_VERSION}" in a.cache_id
    img = _scene(120, 60, (80, 10, 110, 50))
    assert a(img, 16)[0].tobytes() == standardize(img, 16)[0].tobytes()
    fx, fy = trim.focus_fraction(a(img, 16)[1])
    assert 0.0 <= fx <= 1.0 and 0.0 <= fy <= 1.0


def test_bad_arguments():
    img = Image.new("RGB", (10, 10))
    with pytest.raises(UsageError, match="policy"):
        standardize(img, 8, policy="stretch")
    with pytest.raises(UsageError, match="focus"):
        standardize(img, 8, focus="eyes")
    with pytest.raises(UsageError, match="size"):
        standardize(img, 0)


def test_preview_sheet_is_written(tmp_path):
    from ldmkit.data.builtin import build_dataset
    from ldmkit.data.preview import preview_dataset

    build_dataset("shapes", tmp_path / "s", n=6, size=32)
    before = sorted(p.name for p in (tmp_path / "s" / "images").iterdir())
    path = preview_dataset(tmp_path / "s", tmp_path / "sheet.png", n=5, size=32)
    with Image.open(path) as sheet:
        assert sheet.width > 4 * 64 and sheet.height >= 64
    assert sorted(p.name for p in (tmp_path / "s" / "images").iterdir()) == before


def test_opencv_without_haar_cascades_falls_back_to_saliency(monkeypatch):
    """OpenCV 5 builds have no CascadeClassifier / cascades: trimming must still work (seen on a GPU box)."""
    import sys
    import types

    from PIL import Image

    from ldmkit.data import trim

    fake = types.ModuleType("cv2")
    fake.data = types.SimpleNamespace()
    monkeypatch.setitem(sys.modules, "cv2", fake)
    trim._forget_face_cascade()
    try:
        img = Image.new("RGB", (120, 60), "white")
        img.paste(Image.new("RGB", (20, 20), "red"), (90, 20))
        out, record = trim.standardize(img, 32)
        assert out.size == (32, 32) and record.reason != "face"
    finally:
        trim._forget_face_cascade()


def test_face_detection_from_several_threads_at_once():
    """The cache builder decodes images in threads; one shared CascadeClassifier failed there in OpenCV."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image, ImageDraw

    from ldmkit.data import trim

    if trim._face_cascade() is None:
        pytest.skip("this OpenCV build has no Haar cascades (trimming falls back to saliency)")
    images = []  # different sizes at once is what broke the shared classifier (its scale table is per call)
    for i in range(96):
        side = (64, 160, 96)[i % 3]
        img = Image.new("RGB", (side, side * 3 // 4), "white")
        ImageDraw.Draw(img).ellipse((side // 3, side // 8, side * 3 // 4, side * 9 // 16), fill=(230, 190, 160))
        images.append(img)
    expected = [trim.standardize(img, 48)[0].tobytes() for img in images]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda img: trim.standardize(img, 48)[0].tobytes(), images))
    assert results == expected
