"""Who may use the play server: the local user's browser by default, nobody else.

Without a check, any web page the user visits could open ``ws://127.0.0.1:8000/ws`` (browsers
do not apply the same-origin policy to WebSockets), take the session slots and read frames,
and a DNS-rebinding page could reach the HTTP API under its own host name. So every HTTP
request and WebSocket handshake passes :class:`AccessGuard` (an ASGI middleware):

1. ``Host`` must name this server: ``localhost``, ``127.0.0.1``, ``::1``, the interface it
   listens on, or one given with ``--allow-host`` (a rebinding page sends its own name).
2. ``Origin``, when the client sends one (browsers always do for WebSockets and cross-site
   requests), must be the server's own origin (``http://<Host>``) or one given with
   ``--allow-origin``.
3. With a token (``reverie play --token``, meant for ``--host 0.0.0.0``) every request must
   carry it: ``?token=...`` on the first page load, which sets an HttpOnly, SameSite=Strict
   cookie that the page's own requests then send. With a token, any ``Host`` is accepted
   (a server reached by LAN address or name), since a rebinding page cannot know the token.

Refused HTTP requests get 403 with a JSON ``detail``; refused WebSocket handshakes are closed
before ``accept`` (the client sees HTTP 403).
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
TOKEN_COOKIE = "reverie_token"
POLICY_VIOLATION = 1008  # RFC 6455 close code


@dataclass(frozen=True)
class AccessPolicy:
    """Which hosts, origins and token the server accepts (see the module docstring).

    Attributes:
        hosts: accepted ``Host`` names (lower case, without port; IPv6 without brackets).
        origins: accepted ``Origin`` values besides the server's own (``scheme://host:port``).
        token: the shared secret every request must carry, or None.
        any_host: accept every ``Host`` (only with a token: a server on all interfaces).
    """

    hosts: frozenset[str] = LOCAL_HOSTS
    origins: frozenset[str] = frozenset()
    token: str | None = None
    any_host: bool = False

    @classmethod
    def for_server(
        cls,
        bind_host: str,
        *,
        allow_hosts: tuple[str, ...] = (),
        allow_origins: tuple[str, ...] = (),
        token: str | None = None,
    ) -> AccessPolicy:
        """The policy of a server listening on ``bind_host``.

        Raises:
            ValueError: an origin that is not ``scheme://host[:port]``, an empty token.
        """
        if token is not None and len(token) < 8:
            raise ValueError("--token must be at least 8 characters")
        for origin in allow_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise ValueError(f"--allow-origin {origin!r} must look like http://host:port")
        hosts = set(LOCAL_HOSTS) | {h.lower().strip("[]") for h in allow_hosts}
        if bind_host not in WILDCARD_HOSTS:
            hosts.add(bind_host.lower().strip("[]"))
        return cls(
            hosts=frozenset(hosts),
            origins=frozenset(o.rstrip("/") for o in allow_origins),
            token=token,
            any_host=token is not None and bind_host in WILDCARD_HOSTS,
        )

    def check(self, host: str, origin: str | None, token: str | None) -> str | None:
        """None if a request with these headers may pass, else why not (for the client)."""
        name = host_name(host)
        if not self.any_host and name not in self.hosts:
            return f"Host {host!r} is not this server (use http://127.0.0.1 or --allow-host)"
        if origin is not None and origin != "null":
            own = {f"http://{host}", f"https://{host}"}
            if origin.rstrip("/") not in own | self.origins:
                return f"Origin {origin!r} may not use this server (see --allow-origin)"
        elif origin == "null":
            return "pages without an origin (file://, sandboxed) may not use this server"
        if self.token is not None and not (
            token is not None and hmac.compare_digest(token.encode(), self.token.encode())
        ):
            return "missing or wrong token: open the URL with ?token=... that the server printed"
        return None


def host_name(host: str) -> str:
    """The name of a ``Host`` header: ``"[::1]:8000" -> "::1"``, ``"a:80" -> "a"``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class AccessGuard:
    """ASGI middleware applying an :class:`AccessPolicy` to HTTP and WebSocket scopes."""

    def __init__(self, app, policy: AccessPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        from_query = query.get("token", [None])[0]
        token = from_query
        if token is None and "cookie" in headers:
            cookie = SimpleCookie()
            try:
                cookie.load(headers["cookie"])
            except Exception:  # a malformed cookie header carries no token
                cookie = SimpleCookie()
            token = cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else None
        reason = self.policy.check(headers.get("host", ""), headers.get("origin"), token)
        if reason is not None:
            log.warning("refused %s %s: %s", scope["type"], scope.get("path"), reason)
            return await _refuse(scope, receive, send, reason)
        if self.policy.token is None or from_query is None or scope["type"] != "http":
            return await self.app(scope, receive, send)

        cookie = f"{TOKEN_COOKIE}={from_query}; HttpOnly; SameSite=Strict; Path=/"

        async def send_with_cookie(message) -> None:  # the page's own requests carry it on
            if message["type"] == "http.response.start":
                extra = [(b"set-cookie", cookie.encode("latin-1"))]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return await self.app(scope, receive, send_with_cookie)


async def _refuse(scope, receive, send, reason: str) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect; closing now refuses the handshake (HTTP 403)
        await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": reason[:120]})
        return
    body = json.dumps({"detail": reason}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})
