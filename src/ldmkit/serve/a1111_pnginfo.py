"""POST /sdapi/v1/png-info: the A1111 `parameters` text chunk of an image, and its fields.

The PNG's chunks are walked directly and only its text chunks (tEXt, zTXt, iTXt) are read: no pixel is ever
decoded, so the declared picture size does not matter (a decompression bomb costs nothing) and compressed
text is inflated to at most MAX_TEXT_BYTES. The encoded size is bounded as for uploads (serve.uploads).
JPEG and WebP are recognised but their EXIF comments (where A1111 keeps parameters for them) are not read:
their `info` is "".
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import zlib

from ldmkit.pipeline.output import parse_parameters
from ldmkit.serve.request import RequestErrors
from ldmkit.serve.uploads import MAX_ENCODED_CHARS, MAX_UPLOAD_BYTES

MAX_TEXT_BYTES = 1 << 20
"""Bytes one compressed text chunk may inflate to (Pillow's MAX_TEXT_CHUNK); a longer one is skipped."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DATA_URL = re.compile(r"data:image/[a-z+.-]{1,20};base64,", re.IGNORECASE)
_SIZE = re.compile(r"(\d+)x(\d+)")


def _error(message: str, status: int = 422) -> RequestErrors:
    return RequestErrors([{"field": "image", "error": message}], status)


def _file_bytes(value: object) -> bytes:
    if not isinstance(value, str):
        raise _error(f"must be a base64 string or a data:image/...;base64, URL, got {type(value).__name__}")
    match = _DATA_URL.match(value)
    payload = value[match.end():] if match else value
    if len(payload) > MAX_ENCODED_CHARS:
        raise _error(f"image over {MAX_UPLOAD_BYTES} bytes", 413)
    payload = "".join(payload.split())
    try:
        raw = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _error("not valid base64 (or a URL: URLs are never fetched)") from None
    if not raw:
        raise _error("empty image")
    return raw


def png_info_of(value: object) -> dict:
    """{info, items, parameters} as A1111 answers: the parameters text, the file's other text chunks, and the
    parsed fields ("Prompt", "Negative prompt", "Steps", ..., "Size-1", "Size-2")."""
    raw = _file_bytes(value)
    if raw.startswith(PNG_SIGNATURE):
        texts = png_texts(raw)
    elif raw.startswith(b"\xff\xd8\xff") or (raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"):
        texts = {}
    else:
        raise _error("not a PNG, JPEG or WebP image")
    text = texts.pop("parameters", "")
    return {"info": text, "items": texts, "parameters": parse_a1111(text)}


def png_texts(raw: bytes) -> dict[str, str]:
    """keyword -> text of every text chunk of a PNG file (the first chunk of a keyword wins)."""
    texts, pos = {}, len(PNG_SIGNATURE)
    while pos < len(raw):
        if pos + 8 > len(raw):
            raise _error("truncated PNG")
        length, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        data = raw[pos + 8:pos + 8 + length]
        if len(data) < length:
            raise _error("truncated PNG")
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            break
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            key, text = _text_chunk(kind, data)
            if key and text is not None:
                texts.setdefault(key, text)
    return texts


def _text_chunk(kind: bytes, data: bytes) -> tuple[str, str | None]:
    """(keyword, text) of a tEXt / zTXt / iTXt chunk (PNG spec 11.3.4); text None when it cannot be read."""
    key, _, rest = data.partition(b"\0")
    keyword = key.decode("latin-1")[:80]
    if kind == b"tEXt":
        return keyword, rest.decode("latin-1")
    if kind == b"zTXt":
        body = _inflate(rest[1:]) if rest[:1] == b"\0" else None
        return keyword, None if body is None else body.decode("latin-1")
    compressed, rest = rest[:1] == b"\1", rest[2:]  # iTXt: flag, method, language\0, translated keyword\0, text
    rest = rest.partition(b"\0")[2].partition(b"\0")[2]
    body = _inflate(rest) if compressed else rest
    return keyword, None if body is None else body.decode("utf-8", errors="replace")


def _inflate(data: bytes) -> bytes | None:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT_BYTES)
    except zlib.error:
        return None
    return None if inflater.unconsumed_tail else out


def parse_a1111(text: str) -> dict:
    """A parameters text -> A1111's field names: the prompt may span lines, the last line holds the settings
    (when it has at least three `key: value` fields, A1111's rule), Size is split into Size-1 and Size-2."""
    if not text:
        return {}
    lines = text.split("\n")
    fields = parse_parameters("\n" + lines[-1]) if len(lines) > 1 else {"prompt": ""}
    fields.pop("prompt")
    if len(fields) < 3:
        fields = {}
    else:
        lines = lines[:-1]
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].lstrip()
        (negative if in_negative else prompt).append(line)
    out = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in fields.items():
        size = _SIZE.fullmatch(str(value))
        if size:
            out[f"{key}-1"], out[f"{key}-2"] = size.group(1), size.group(2)
        else:
            out[key] = value
    return out
