"""Images a client sends (img2img init images): base64 or a data URL -> a checked RGB picture, and their files.

    image = decode_image(body["init_image"], "init_image")   # RequestErrors (status 413 or 422) if unusable
    upload_id = save_upload(data_dir, image)                  # data_dir/uploads/<id>.png, written whole

Bounded before any pixel is decoded: the encoded size (MAX_UPLOAD_BYTES), then the picture size the header
declares (MAX_UPLOAD_PIXELS; Pillow reads only the header in `Image.open`), so a small file that declares a
huge picture (a decompression bomb) is refused without allocating it. At most DECODERS uploads are decoded
at once, so memory stays bounded however many clients send images. Only PNG, JPEG and WebP are read; a URL
is never fetched (ComfyUI/InvokeAI fetched remote files: CVE-2024-12029).

The upload is kept under --data-dir so that a queued job, and one requeued after a crash, still finds its
image; its id is a hash of its PNG, so identical init images share one file (and one batch).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import threading
import warnings
from pathlib import Path

from ldmkit.serve.request import RequestErrors
from ldmkit.serve.store import write_png_atomic

MAX_UPLOAD_BYTES = 20 * 2**20
"""Size of one image file as sent (after base64 decoding), bytes; larger -> 413."""
MAX_UPLOAD_PIXELS = 4096 * 4096
"""Pixels (width x height) an uploaded image may declare; larger -> 413 before decoding. A 16 Mpx photo
decodes to 48 MB of RGB; the picture is resized to the sampling size (at most --max-pixels) right after."""
MAX_ENCODED_CHARS = (MAX_UPLOAD_BYTES + 2) // 3 * 4 + 100
"""Characters of base64 (plus a data-URL prefix) that can hold MAX_UPLOAD_BYTES."""
DECODERS = 2
"""Uploads decoded at the same time at most (others wait): memory stays flat under many clients."""
FORMATS = ("PNG", "JPEG", "WEBP")
IMAGE_FIELDS = ("init_image", "init_images", "image")
"""Body keys that may carry an image (a body with one may be larger than a plain JSON request)."""
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_DATA_URL = re.compile(r"data:image/(png|jpeg|jpg|webp);base64,", re.IGNORECASE)
_URL = re.compile(r"(https?|ftp|file|s3|gs):|//", re.IGNORECASE)
_decoding = threading.BoundedSemaphore(DECODERS)


def _error(field: str, message: str, status: int = 422) -> RequestErrors:
    return RequestErrors([{"field": field, "error": message}], status)


def decode_image(value: object, field: str):
    """The RGB PIL image in `value` (raw base64, or a data:image/png|jpeg|webp;base64, URL); RequestErrors
    naming `field` otherwise, with status 413 when the file or its declared picture is over the limits."""
    if not isinstance(value, str):
        raise _error(field, f"must be a base64 string or a data:image/...;base64, URL, got {type(value).__name__}")
    head = value[:64].lstrip()
    if _URL.match(head):
        raise _error(field, "URLs are not fetched; send the image itself as base64 or a data:image/...;base64, URL")
    if head[:5].lower() == "data:":
        match = _DATA_URL.match(head)
        if match is None:
            raise _error(field, "a data URL must start data:image/png;base64, (or jpeg, webp)")
        value = value.lstrip()[match.end():]
    if len(value) > MAX_ENCODED_CHARS:
        raise _error(field, f"image over {MAX_UPLOAD_BYTES} bytes", 413)
    payload = "".join(value.split())  # base64 wrapped in lines (Python's encodebytes, MIME) is still base64
    payload += "=" * (-len(payload) % 4)  # some encoders drop the padding
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _error(field, "not valid base64") from None
    if not raw:
        raise _error(field, "empty image")
    if len(raw) > MAX_UPLOAD_BYTES:
        raise _error(field, f"image of {len(raw)} bytes is over the limit of {MAX_UPLOAD_BYTES}", 413)
    with _decoding:
        return _read(raw, field)


def _read(raw: bytes, field: str):
    """Header first (size check), then the pixels; Pillow's own bomb check is an error here, never a warning."""
    from PIL import Image, UnidentifiedImageError

    from ldmkit.data.images import BadImage, decode, to_rgb

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(raw), formats=FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _error(field, f"image declares more than {MAX_UPLOAD_PIXELS} pixels", 413) from None
        except UnidentifiedImageError:
            raise _error(field, "not a PNG, JPEG or WebP image (or its header is damaged)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise _error(field, f"corrupt image: {str(err)[:200]}") from None
        try:
            width, height = img.size
            if width < 1 or height < 1:
                raise _error(field, f"image has size {width}x{height}")
            if width * height > MAX_UPLOAD_PIXELS:
                raise _error(field, f"image is {width}x{height} = {width * height} pixels, over the limit of "
                                    f"{MAX_UPLOAD_PIXELS}", 413)
            try:
                decode(img)
            except BadImage as bad:
                if bad.reason == "decompression_bomb":
                    raise _error(field, f"image declares more than {MAX_UPLOAD_PIXELS} pixels", 413) from None
                raise _error(field, f"{bad.reason} image: {bad.detail[:200]}") from None
            except Image.DecompressionBombWarning:
                raise _error(field, f"image declares more than {MAX_UPLOAD_PIXELS} pixels", 413) from None
            return to_rgb(img)
        finally:
            img.close()


def uploads_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "uploads"


def save_upload(data_dir: Path, image) -> str:
    """Write `image` as data_dir/uploads/<id>.png (whole or not at all) and return its id, a hash of the PNG."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    upload_id = hashlib.sha256(data).hexdigest()[:32]
    directory = uploads_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / f"{upload_id}.png").exists():
        write_png_atomic(directory, upload_id, data)
    return upload_id


def load_upload(data_dir: Path, upload_id: str):
    """The RGB image of a saved upload; FileNotFoundError when it is gone."""
    from PIL import Image

    if not UPLOAD_ID.fullmatch(upload_id):
        raise FileNotFoundError(f"not an upload id: {upload_id[:40]!r}")
    with Image.open(uploads_dir(data_dir) / f"{upload_id}.png", formats=("PNG",)) as img:
        return img.convert("RGB")


def clean_uploads(data_dir: Path, referenced: set[str]) -> int:
    """At start: remove temp files and uploads no job refers to (debris of a crash or a refused request).
    Returns how many files were removed."""
    directory = uploads_dir(data_dir)
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.iterdir():
        if path.name.startswith(".tmp-") or (path.suffix == ".png" and path.stem not in referenced):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


__all__ = ["decode_image", "save_upload", "load_upload", "clean_uploads", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS"]
