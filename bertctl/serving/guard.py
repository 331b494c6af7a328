"""Who may call `bertctl serve`, and what a caller may see of it: the API key, CORS origins, request ids.

    bertctl serve runs/agnews --host 0.0.0.0 --api-key "$(openssl rand -hex 32)"
    BERTCTL_API_KEY=... bertctl serve runs/agnews --host 0.0.0.0 --cors-origin https://app.example.com
    curl -s -H "Authorization: Bearer $BERTCTL_API_KEY" 127.0.0.1:8000/predict -d '{"texts": ["..."]}'

The checks a server makes before it listens (`check_exposure`, `check_cors_origins`) raise BertctlError, so the
command exits 2 with the fix; `ApiKey` is an ASGI middleware. Nothing here imports fastapi: it runs before the
serve extra is checked, and the middleware speaks plain ASGI.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import socket
import uuid

from bertctl.errors import BertctlError

API_KEY_ENV = "BERTCTL_API_KEY"
OPEN_PATHS = ("/health",)  # a load balancer's probe carries no key
# a caller's id goes into a response header and a log line as it came: short, and no spaces, quotes or controls
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")
ORIGIN = re.compile(r"https?://[^/\s?#]+")


def is_loopback(host: str) -> bool:
    """True when only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False  # a name that does not resolve fails at bind, with its own message
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_exposure(host: str, api_key: str | None, allow_unauthenticated: bool) -> None:
    """Refuse to open a server without a key to other machines, unless asked to in so many words."""
    if api_key is not None and not api_key.strip():
        raise BertctlError(f"the API key is empty (--api-key or {API_KEY_ENV})", fix=f'set a long random key: export {API_KEY_ENV}="$(openssl rand -hex 32)"')
    if api_key is None and not allow_unauthenticated and not is_loopback(host):
        raise BertctlError(
            f"--host {host} lets other machines call this server, and it has no API key",
            fix=f'set a key: export {API_KEY_ENV}="$(openssl rand -hex 32)" (or --api-key KEY), and callers send '
            '"Authorization: Bearer KEY"; or pass --allow-unauthenticated to accept the risk',
        )


def check_cors_origins(origins: list[str] | tuple[str, ...]) -> None:
    bad = [o for o in origins if o != "*" and not ORIGIN.fullmatch(o)]
    if bad:
        raise BertctlError(
            f"--cors-origin {bad[0]!r} is not an origin (scheme://host[:port], no path)",
            fix="--cors-origin https://app.example.com (repeat the flag for more; '*' allows any site)",
        )


def request_id(scope) -> str:
    """The caller's X-Request-ID when it is a sane token, else a fresh one: it is echoed and logged as it is."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if REQUEST_ID.fullmatch(given):
                return given
            break
    return uuid.uuid4().hex


class ApiKey:
    """ASGI middleware: every path but /health needs `Authorization: Bearer KEY`; else 401 + WWW-Authenticate."""

    def __init__(self, app, key: str):
        self.app = app
        self.key = key.encode("utf-8")

    def allowed(self, scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                # compare_digest: the time taken says nothing about how much of a guess was right
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self.allowed(scope):
            return await self.app(scope, receive, send)
        body = {"error": "this server needs an API key: send the header 'Authorization: Bearer KEY' (the key it was started with, --api-key or BERTCTL_API_KEY)"}
        rid = scope.get("bertctl", {}).get("request_id")
        if rid:
            body["request_id"] = rid
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), (b"www-authenticate", b'Bearer realm="bertctl"')]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
