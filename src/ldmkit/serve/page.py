"""The web page: `GET /` and a fixed list of files under `/static/` (src/ldmkit/serve/static).

A request names a file only by a key of FILES, so no client-supplied path ever reaches the file system
(ComfyUI #12285 was path traversal in a file route). The page needs no token to load (it holds no data; it
asks for the token and sends it with every API call) and runs under a strict Content-Security-Policy:
scripts and styles from this server only, no inline code, no framing.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import FileResponse, JSONResponse

STATIC = Path(__file__).with_name("static")
FILES = {"app.js": "text/javascript", "api.js": "text/javascript", "form.js": "text/javascript",
         "gallery.js": "text/javascript", "png.js": "text/javascript", "style.css": "text/css"}
"""The files under /static/ and their media types (index.html is served at /)."""
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
}


def is_page(method: str, path: str) -> bool:
    """Whether a request is for the page itself (answered without the token; the API still needs it)."""
    return method in ("GET", "HEAD") and (path == "/" or path.removeprefix("/static/") in FILES)


def register(app) -> None:
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        kind = FILES.get(name)
        if kind is None:
            return JSONResponse({"detail": "no such file"}, status_code=404)
        return FileResponse(STATIC / name, media_type=f"{kind}; charset=utf-8", headers=HEADERS)


__all__ = ["register", "is_page", "FILES"]
