"""Reading one image file into a correct RGB picture, or saying precisely why it cannot be used.

    img, conversions = load_rgb(path)       # PIL RGB, e.g. conversions == ("CMYK->RGB", "exif_rotated")
    except BadImage as bad: bad.reason     # 'truncated', 'corrupt', 'zero_byte', ...

Conversions: EXIF orientation applied; CMYK through its ICC profile when it has one (else Pillow's
formula); 16-bit greyscale scaled 65535 -> 255 (Pillow's own convert clips it to white); greyscale,
palette and 1-bit expanded; any transparency (LA, RGBA, PA, P with a transparent index) composited on
white. Files are only ever opened for reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"})
"""Suffixes treated as images when scanning folders (case-insensitive)."""
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
TRANSPARENT_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class BadImage(Exception):
    """An image file that cannot be used; `reason` is one of report.IMAGE_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageCheck:
    """What checking one usable image found."""

    size: tuple[int, int]
    """(width, height) after EXIF orientation."""
    mode: str
    """The Pillow mode of the file as stored ('RGB', 'CMYK', 'I;16', ...)."""
    conversions: tuple[str, ...]
    """What load_rgb will do to make it RGB (empty for a plain RGB file)."""

    def __post_init__(self) -> None:
        if self.size[0] < 1 or self.size[1] < 1:
            raise ValueError(f"image size must be positive, got {self.size}")


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def open_image(path: Path):
    """Image.open with every failure turned into BadImage (the caller must close the image)."""
    from PIL import Image, UnidentifiedImageError

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadImage("missing_image", f"{path} does not exist") from None
    except OSError as err:
        raise BadImage("unreadable", str(err)) from None
    if size == 0:
        raise BadImage("zero_byte", "the file is empty")
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as err:
        raise BadImage("decompression_bomb", str(err)) from None
    except UnidentifiedImageError:
        raise BadImage("not_an_image", f"Pillow cannot identify {path.name} as an image") from None
    except (PermissionError, IsADirectoryError) as err:
        raise BadImage("unreadable", str(err)) from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = "truncated" if "truncated" in str(err).lower() else "corrupt"
        raise BadImage(reason, f"{type(err).__name__}: {err}") from None
    width, height = img.size
    limit = Image.MAX_IMAGE_PIXELS  # None: the user switched Pillow's check off
    if limit is not None and width * height > limit:
        img.close()
        raise BadImage("decompression_bomb", f"{width}x{height} = {width * height} pixels exceeds Pillow's "
                                             f"limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS)")
    if width < 1 or height < 1:
        img.close()
        raise BadImage("corrupt", f"image has size {width}x{height}")
    return img


def decode(img) -> None:
    """Force the pixel data to be read, classifying decoder errors."""
    from PIL import Image

    try:
        img.load()
    except Image.DecompressionBombError as err:
        raise BadImage("decompression_bomb", str(err)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        text = str(err)
        # Pillow says "image file is truncated" or (JPEG) "Truncated File Read" for data that stops early;
        # anything else is damage.
        reason = "truncated" if "truncated" in text.lower() or isinstance(err, EOFError) else "corrupt"
        raise BadImage(reason, f"{type(err).__name__}: {text}") from None


def exif_orientation(img) -> int:
    """The EXIF orientation tag (1 = as stored). Never decodes: Pillow's PNG getexif() would load the
    pixels to look for an eXIf chunk after the image data, so for PNG only what was read so far counts."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not make a good picture unusable
        return 1


def planned_conversions(img) -> tuple[str, ...]:
    """The steps to_rgb will take for this image, named for the report."""
    steps = []
    if exif_orientation(img) not in (1, 0):
        steps.append("exif_rotated")
    mode = img.mode
    if mode in TRANSPARENT_MODES or (mode == "P" and "transparency" in img.info):
        steps.append(f"{mode}->RGB on white")
    elif mode != "RGB":
        steps.append(f"{mode}->RGB")
    return tuple(steps)


def check_image(path: Path, *, full: bool = True) -> ImageCheck:
    """Open (and with full=True decode) one image; raises BadImage when it is unusable."""
    img = open_image(path)
    try:
        width, height = img.size  # from the header, before draft() shrinks a JPEG
        if full:
            if img.format == "JPEG":  # decode at 1/8 scale: every byte is still read, 10x less work
                img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
            decode(img)  # before any EXIF lookup: for PNG that loads the image and would hide errors
        steps = planned_conversions(img)
        if exif_orientation(img) in (5, 6, 7, 8):
            width, height = height, width
        return ImageCheck((width, height), img.mode, steps)
    finally:
        img.close()


def load_rgb(path: Path) -> tuple:
    """(PIL RGB image, conversions applied) for a usable image file; raises BadImage otherwise."""
    img = open_image(path)
    try:
        decode(img)
        steps = planned_conversions(img)
        return to_rgb(img), steps
    finally:
        img.close()


def load_rgb_within(path: Path, max_pixels: int) -> tuple:
    """load_rgb with a pixel limit read from the header, before decoding (a small file can declare a huge
    picture); the same conversions as the data readers (16-bit grey, CMYK, alpha, EXIF). Used for init images."""
    img = open_image(path)
    try:
        width, height = img.size
        if width * height > max_pixels:
            raise BadImage("decompression_bomb", f"{width}x{height} = {width * height} pixels is over the limit "
                                                 f"of {max_pixels}")
        decode(img)
        steps = planned_conversions(img)
        return to_rgb(img), steps
    finally:
        img.close()


def to_rgb(img):
    """A correct RGB copy of a decoded PIL image: EXIF orientation, colour space, bit depth, alpha on white."""
    from PIL import Image, ImageOps

    if exif_orientation(img) not in (1, 0):
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in TRANSPARENT_MODES or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(img)
    if mode == "F":
        import numpy as np

        grey = np.clip(np.asarray(img, dtype=np.float32), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "CMYK" and img.info.get("icc_profile"):
        converted = _cmyk_with_profile(img)
        if converted is not None:
            return converted
    return img.convert("RGB")


def _sixteen_bit_to_rgb(img):
    """16-bit greyscale: scale 0..65535 onto 0..255 (Pillow's convert would clip everything above 255)."""
    import numpy as np
    from PIL import Image

    values = np.asarray(img).astype(np.float64)
    grey = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def _cmyk_with_profile(img):
    """CMYK -> sRGB through the embedded ICC profile; None when littlecms cannot do it."""
    import io

    try:
        from PIL import ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        return ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # a broken or unsupported profile: fall back to the plain formula
        return None


# -- images <-> model pixels: the one conversion every layer uses (training, sampling, evaluation) ----------------

def to_pixels(image):
    """A PIL image -> float32 tensor [1, 3, H, W] in [-1, 1] (x / 127.5 - 1; converted to RGB by Pillow)."""
    import numpy as np
    import torch

    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0  # [H, W, 3]
    return torch.from_numpy(arr).permute(2, 0, 1)[None]  # [1, 3, H, W]


def images_to_pixels(images):
    """PIL images of one size -> float32 tensor [N, 3, H, W] in [-1, 1] (see to_pixels)."""
    import torch

    return torch.cat([to_pixels(image) for image in images])


def to_pil(pixels) -> list:
    """[-1, 1] tensor [N, 3, H, W] -> PIL images, rounding exactly as diffusers' image processor does."""
    import numpy as np
    from PIL import Image

    arr = (pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()  # [N, H, W, 3] in [0, 1]
    return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in arr]
