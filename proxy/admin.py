"""The admin server: health, readiness, Prometheus metrics and the live data API.

It listens on `server.admin_listen`, never on the proxy port, so an application can never
reach it by accident through its OpenAI base URL.

`/metrics`, `/healthz` and `/readyz` are open: probes and Prometheus need no credentials and
these carry no request data. Every other path — `/api/*` serves stored prompts and answers —
needs `Authorization: Bearer <server.admin_token>`:

    curl -H "Authorization: Bearer $SHADOWTAP_ADMIN_TOKEN" http://127.0.0.1:9464/api/summary

With no token configured those paths answer 403, unless `server.admin_api_open_on_loopback`
opens them on a loopback-only listener.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from shadowtap.config import ServerConfig
from shadowtap.log import get_logger

log = get_logger("shadowtap.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Health = Callable[[], Mapping[str, str]]

NOT_CONFIGURED = (
    "the admin API is off: set server.admin_token (e.g. admin_token = "
    '"${SHADOWTAP_ADMIN_TOKEN}") and send Authorization: Bearer <token>'
)
MISSING = "this endpoint needs Authorization: Bearer <token> (the server's admin_token)"
WRONG = "the bearer token is not the server's admin_token"
CHALLENGE = 'Bearer realm="shadowtap admin API"'


def _digest(token: str) -> bytes:
    # Comparing fixed-size digests keeps even the token's length out of the timing.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class AdminAccess:
    """Who may use the admin paths other than /metrics, /healthz and /readyz."""

    token_digest: bytes | None = field(default=None, repr=False)
    open_on_loopback: bool = False

    @classmethod
    def of(cls, server: ServerConfig) -> AdminAccess:
        token = server.admin_token.get_secret_value() if server.admin_token else None
        return cls(_digest(token) if token else None, server.admin_api_open_on_loopback)

    def denial(self, request: web.Request) -> web.Response | None:
        """None when the request may pass; otherwise the 401/403 answer to send."""
        if self.open_on_loopback:
            return None  # the config only allows this on a loopback admin_listen
        if self.token_digest is None:
            return _error(403, NOT_CONFIGURED)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _error(401, MISSING, challenge=CHALLENGE)
        if not hmac.compare_digest(_digest(given.strip()), self.token_digest):
            return _error(401, WRONG, challenge=f'{CHALLENGE}, error="invalid_token"')
        return None


def _error(status: int, message: str, challenge: str | None = None) -> web.Response:
    response = web.json_response({"error": message}, status=status)
    if challenge is not None:
        response.headers["WWW-Authenticate"] = challenge
    return response


def build_admin_app(
    registry: CollectorRegistry,
    is_ready: Callable[[], bool],
    extra_routes: Iterable[web.AbstractRouteDef] = (),
    *,
    access: AdminAccess | None = None,
    health: Health | None = None,
) -> web.Application:
    """The admin app. `access` defaults to refusing every non-open path; `health` is
    recording's state for /readyz (None: storage is off)."""
    access = access or AdminAccess()

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        # Ready means "the proxy serves": recording trouble is reported in the body but never
        # takes the application's pod out of its Service.
        try:
            detail = dict(health()) if health is not None else {"recording": "off"}
        except Exception:  # a broken health check must not fail readiness
            log.exception("health_check_failed")
            detail = {"recording": "unknown"}
        if is_ready():
            return web.json_response({"status": "ready", **detail})
        return web.json_response({"status": "draining", **detail}, status=503)

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    open_handlers = frozenset({healthz, readyz, metrics})

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Decided on the route that matched, not on the raw path, so no spelling of a path
        # (encoded slashes, dot segments, unknown paths) reaches data without the token.
        if request.match_info.handler in open_handlers:
            return await handler(request)
        denied = access.denial(request)
        if denied is not None:
            return denied
        return await handler(request)

    app = web.Application(middlewares=[authenticate])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_routes(list(extra_routes))
    return app
