"""The admin server: health, readiness, Prometheus metrics and the live data API.

It listens on `server.admin_listen`, never on the proxy port, so an application can never
reach it by accident through its OpenAI base URL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def build_admin_app(
    registry: CollectorRegistry,
    is_ready: Callable[[], bool],
    extra_routes: Iterable[web.AbstractRouteDef] = (),
) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        if is_ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "draining"}, status=503)

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_routes(list(extra_routes))
    return app
