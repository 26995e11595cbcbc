"""A zoo with one file of every bad or awkward kind: each counted by reason, converted correctly pixel by
pixel, and left byte-identical on disk."""

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldmkit.data.dataset import CaptionDataset
from ldmkit.data.images import BadImage, load_rgb
from ldmkit.errors import DataError

RED, BLUE = (220, 20, 30), (20, 40, 230)


def png_bytes(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **save)
    return buf.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (IHDR patched, CRC recomputed)."""
    data = bytearray(png_bytes(Image.new("L", (8, 8))))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def rgba_array() -> np.ndarray:
    """4x4 RGBA: colours in rows, alpha 255 / 128 / 0 / 64 in columns."""
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = np.array([[10, 200, 30], [250, 0, 0], [0, 0, 250], [90, 90, 90]], np.uint8)[:, None, :]
    rgba[..., 3] = np.array([255, 128, 0, 64], np.uint8)[None, :]
    return rgba


def on_white(rgba: np.ndarray) -> np.ndarray:
    """Closed form of alpha compositing over white."""
    alpha = rgba[..., 3:4].astype(np.float64) / 255
    return rgba[..., :3] * alpha + 255 * (1 - alpha)


def write_zoo(root: Path) -> dict[str, str]:
    """Files for every case; returns file name -> the reason expected (or 'ok')."""
    root.mkdir(parents=True)
    expected = {}

    def put(name, data, reason):
        (root / name).write_bytes(data)
        expected[name] = reason

    put("good.png", png_bytes(Image.new("RGB", (8, 6), RED)), "ok")
    put("zero.jpg", b"", "zero_byte")
    put("text.jpg", b"this is not a JPEG, it is a note someone saved as .jpg\n", "not_an_image")
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    put("truncated.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "truncated")
    damaged = bytearray(png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3),
                                                                                    dtype=np.uint8))))
    damaged[len(damaged) // 2: len(damaged) // 2 + 40] = bytes(40)
    put("corrupt.png", bytes(damaged), "corrupt")
    put("bomb.png", png_with_size(14000, 14000), "decompression_bomb")  # > 2x limit: Pillow raises
    put("bomb_warn.png", png_with_size(10000, 10000), "decompression_bomb")  # > limit: Pillow only warns
    cmyk = Image.new("CMYK", (4, 2), (255, 0, 0, 0))
    cmyk.paste((0, 0, 0, 255), (2, 0, 4, 2))
    buf = io.BytesIO()
    cmyk.save(buf, "TIFF")
    put("cmyk.tif", buf.getvalue(), "ok")
    palette = Image.new("P", (3, 1))
    palette.putpalette([*RED, *BLUE, 0, 255, 0] + [0] * (256 - 3) * 3)
    palette.putdata([0, 1, 2])
    put("palette.png", png_bytes(palette), "ok")
    put("palette_transparent.png", png_bytes(palette, transparency=1), "ok")
    put("gray16.png", png_bytes(Image.fromarray(np.array([[0, 257, 32896, 65535]], np.uint16))), "ok")
    put("gray.png", png_bytes(Image.fromarray(np.array([[0, 77, 255]], np.uint8), "L")), "ok")
    put("rgba.png", png_bytes(Image.fromarray(rgba_array(), "RGBA")), "ok")
    la = rgba_array()[..., [0, 3]]
    put("la.png", png_bytes(Image.fromarray(la, "LA")), "ok")
    stored = Image.new("RGB", (40, 20), RED)  # left half red, right half blue as stored
    stored.paste(BLUE, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    put("exif.png", png_bytes(stored, exif=exif.tobytes()), "ok")
    put("two_captions.png", png_bytes(Image.new("RGB", (4, 4), BLUE)), "ok")
    put("empty_caption.png", png_bytes(Image.new("RGB", (4, 4), BLUE)), "no_caption")
    return expected


def write_metadata(root: Path, expected: dict[str, str]) -> None:
    lines = [json.dumps({"file_name": name, "text": f"picture {name}"}).encode() for name in sorted(expected)
             if name not in ("empty_caption.png", "two_captions.png")]
    lines += [
        json.dumps({"file_name": "two_captions.png", "text": ["a blue square", ""]}).encode(),  # empty_caption
        json.dumps({"file_name": "empty_caption.png", "text": "  "}).encode(),  # empty_caption + no_caption
        b'{"file_name": "two_captions.png", "text": "caf\xe9 with bad bytes"}',  # bad_utf8 (latin-1 byte)
        json.dumps({"file_name": "ghost.png", "text": "an image that is not there"}).encode(),  # missing_image
        json.dumps({"file_name": "good.png", "text": "picture good.png"}).encode(),  # duplicate_line
        b'{"file_name": "good.png", "text": ',  # malformed_line
    ]
    (root / "metadata.jsonl").write_bytes(b"\n".join(lines) + b"\n")


@pytest.fixture
def zoo(tmp_path):
    root = tmp_path / "zoo"
    expected = write_zoo(root)
    write_metadata(root, expected)
    return root, expected


def digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


def test_every_reason_counted_and_files_untouched(zoo):
    root, expected = zoo
    before = digests(root)
    ds = CaptionDataset.open(root, max_bad_fraction=1.0)
    for i in range(len(ds)):
        ds.image(i)
    assert digests(root) == before
    image_reasons = {}
    for reason in expected.values():
        if reason != "ok":
            image_reasons[reason] = image_reasons.get(reason, 0) + 1
    caption_reasons = {"empty_caption": 2, "bad_utf8": 1, "missing_image": 1, "duplicate_line": 1,
                       "malformed_line": 1}
    assert ds.report.counts() == dict(sorted({**image_reasons, **caption_reasons}.items(),
                                             key=lambda kv: (-kv[1], kv[0])))
    assert sorted(s.image_id for s in ds) == sorted(n for n, r in expected.items() if r == "ok")
    lines = (root / "metadata.jsonl").read_bytes().split(b"\n")
    malformed = ds.report.examples["malformed_line"][0]
    assert malformed.file == "metadata.jsonl"
    assert lines[malformed.line - 1] == b'{"file_name": "good.png", "text": '
    assert lines[ds.report.examples["bad_utf8"][0].line - 1].endswith(b'bad bytes"}')
    assert ds.report.examples["truncated"][0].file == "truncated.jpg"
    two = next(s for s in ds if s.image_id == "two_captions.png")
    assert two.captions == ("a blue square",)


def test_conversions_pixel_exact(zoo):
    root, _ = zoo
    ds = CaptionDataset.open(root, max_bad_fraction=1.0)
    pixels = {s.image_id: np.asarray(ds.image(i)) for i, s in enumerate(ds)}
    assert all(p.dtype == np.uint8 and p.shape[2] == 3 for p in pixels.values())
    # CMYK: cyan -> (0, 255, 255), full black ink -> (0, 0, 0)
    np.testing.assert_array_equal(pixels["cmyk.tif"][:, :2], np.full((2, 2, 3), (0, 255, 255)))
    np.testing.assert_array_equal(pixels["cmyk.tif"][:, 2:], np.zeros((2, 2, 3)))
    np.testing.assert_array_equal(pixels["palette.png"][0], [RED, BLUE, (0, 255, 0)])
    np.testing.assert_array_equal(pixels["palette_transparent.png"][0], [RED, (255, 255, 255), (0, 255, 0)])
    np.testing.assert_array_equal(pixels["gray16.png"][0], np.repeat([[0], [1], [128], [255]], 3, axis=1))
    np.testing.assert_array_equal(pixels["gray.png"][0], np.repeat([[0], [77], [255]], 3, axis=1))
    np.testing.assert_allclose(pixels["rgba.png"], on_white(rgba_array()), atol=1)
    la = rgba_array()
    la[..., 1] = la[..., 2] = la[..., 0]
    np.testing.assert_allclose(pixels["la.png"], on_white(la), atol=1)
    rotated = pixels["exif.png"]
    assert rotated.shape == (40, 20, 3)  # 40x20 stored, displayed 20 wide x 40 high
    np.testing.assert_array_equal(rotated[:20].reshape(-1, 3), np.tile(RED, (400, 1)))  # left went to top
    np.testing.assert_array_equal(rotated[20:].reshape(-1, 3), np.tile(BLUE, (400, 1)))
    assert ds.checks["exif.png"].size == (20, 40)
    assert {"exif_rotated", "CMYK->RGB", "I;16->RGB", "P->RGB", "P->RGB on white", "LA->RGB on white",
            "RGBA->RGB on white", "L->RGB"} <= set(ds.report.converted)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_load_rgb_raises_reason(zoo):
    root, expected = zoo
    for name, reason in expected.items():
        if reason in ("ok", "no_caption"):
            load_rgb(root / name)
        else:
            with pytest.raises(BadImage) as err:
                load_rgb(root / name)
            assert err.value.reason == reason, name


def test_too_many_bad_images_abort_with_counts(zoo):
    root, expected = zoo
    bad = sum(r != "ok" for r in expected.values()) + 1  # + the missing ghost.png
    usable = sum(r == "ok" for r in expected.values())
    with pytest.raises(DataError) as err:
        CaptionDataset.open(root)
    message = str(err.value)
    assert f"{bad} of {bad + usable} images" in message and "max_bad_fraction=0.05" in message
    assert "decompression_bomb: 2" in message  # the most frequent reason comes first
    threshold = bad / (bad + usable)
    assert len(CaptionDataset.open(root, max_bad_fraction=threshold)) == usable
    with pytest.raises(DataError):
        CaptionDataset.open(root, max_bad_fraction=threshold * 0.99)


def test_class_folder_non_image_files_and_bad_sidecar_text(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    (tmp_path / "cats").mkdir()
    for i in range(40):
        Image.new("RGB", (4, 4)).save(tmp_path / "cats" / f"{i}.png")
    (tmp_path / "cats" / "notes.pdf").write_bytes(b"%PDF-1.4")
    ds = CaptionDataset.open(tmp_path, format="classfolders")
    assert ds.report.counts() == {"no_caption": 1, "not_an_image": 1} and len(ds) == 40
    side = tmp_path / "side"
    side.mkdir()
    Image.new("RGB", (4, 4)).save(side / "a.png")
    (side / "a.txt").write_bytes(b"good caption\nbad \xff\xfe caption\n")
    sidecar = CaptionDataset.open(side)
    assert sidecar[0].captions == ("good caption",)
    assert sidecar.report.counts() == {"bad_utf8": 1}
    assert sidecar.report.examples["bad_utf8"][0].line == 2
