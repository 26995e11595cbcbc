"""The server's front door (an ASGI middleware, before any route runs).

- Host: when bound to a loopback address only loopback host names are answered (DNS rebinding).
- Token: with `--token`, every request needs `Authorization: Bearer TOKEN` or, for A1111 clients (Open WebUI,
  SillyTavern send `--api-auth` credentials), HTTP Basic with TOKEN as the password and any user name;
  compared in constant time.
- State-changing requests (POST, PUT, PATCH, DELETE): a body must be JSON or multipart (a cross-site HTML
  form cannot send those without a CORS preflight, which this server never grants; an empty body, as
  A1111 clients send to /sdapi/v1/interrupt, needs no type), and an `Origin` header, when present, must be
  this server's own; `null` and foreign origins are refused (CSRF).
- Body size: at most `max_body` bytes, read before the route sees it (413 otherwise).
No CORS headers are ever sent.
"""

from __future__ import annotations

import base64
import hmac
import json
from urllib.parse import urlsplit

from ldmkit.serve.page import is_page

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS


async def _reply(send, status: int, message: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def _host_name(value: str) -> str:
    """The host part of a Host header (`127.0.0.1:7860` -> `127.0.0.1`, `[::1]:80` -> `[::1]`)."""
    if value.startswith("["):
        return value.split("]", 1)[0] + "]"
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _token_matches(given: str, token: str) -> bool:
    """`Bearer TOKEN`, or `Basic base64(user:TOKEN)` (any user; A1111's --api-auth clients send Basic)."""
    scheme, _, value = given.partition(" ")
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8"), token.encode("utf-8"))


class Guard:
    def __init__(self, app, *, bind_host: str, token: str | None, max_body: int):
        self.app, self.bind_host, self.token, self.max_body = app, bind_host, token, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if is_loopback(self.bind_host) and not is_loopback(_host_name(host)):
            return await _reply(send, 421, f"this server answers only to loopback host names, not {host[:100]!r}")
        if self.token is not None and not is_page(scope["method"], scope["path"]):  # the page asks for it
            if not _token_matches(headers.get("authorization", ""), self.token):
                return await _reply(send, 401, "missing or wrong token (Authorization: Bearer TOKEN, or Basic "
                                               "with the token as password)",
                                    [(b"www-authenticate", b"Bearer")])
        if scope["method"] in UNSAFE_METHODS:
            refused = self._refuse_unsafe(headers, host)
            if refused:
                return await _reply(send, *refused)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await _reply(send, 413, f"request body over {self.max_body} bytes")
        if scope["method"] not in UNSAFE_METHODS:
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await _reply(send, 413, f"request body over {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body, sent = b"".join(chunks), False
        kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if body and kind not in ("application/json", "multipart/form-data"):
            return await _reply(send, 415, "a request body must be JSON (Content-Type: application/json)")

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await self.app(scope, replay, send)

    @staticmethod
    def _refuse_unsafe(headers: dict[str, str], host: str) -> tuple[int, str] | None:
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            if origin == "null" or parts.netloc != host or parts.scheme not in ("http", "https"):
                return 403, f"cross-origin request refused (Origin {origin[:100]!r})"
        return None
