"""`ShadowtapServer`: wires config into the proxy and admin apps, and drains them on stop.

Usable in-process (tests, the demo, benchmarks) with ports 0:

    server = ShadowtapServer(config)
    await server.start()          # server.proxy_port, server.admin_port are the bound ports
    ...
    await server.stop()           # drain within server.shutdown_grace_s, then flush storage

aiohttp owns the lifecycle. The proxy app's resources are `cleanup_ctx` generators, set up in
order at start and torn down in reverse after the listener has drained: the upstream sessions,
then the recorder, then scoring, then the handler with its background shadows and exchanges.
A stop therefore runs: no new connections; uploads in progress until half the grace (then
503); requests in flight until the grace ends (then cancelled); shadows until the grace ends
(then cancelled, recorded as such); scoring at most `SCORING_AFTER_GRACE_S` more (then the
exchange is recorded unscored); the recorder's final flush; the admin listener last, so
/readyz says "draining" and /metrics is scraped throughout.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from shadowtap.admin import AdminAccess, build_admin_app
from shadowtap.bounds import ShadowBounds
from shadowtap.config import Config, route_dialects, split_host_port
from shadowtap.handler import ProxyHandler
from shadowtap.listener import (
    ClientLimits,
    Listener,
    ListenerName,
    fit_proxy_cap,
    open_file_limit,
    raise_open_file_limit,
)
from shadowtap.log import get_logger
from shadowtap.metrics import Metrics
from shadowtap.pipeline import ExchangePipeline
from shadowtap.pricing import Prices
from shadowtap.sampling import Draws, SamplingPolicy, ShadowBudget
from shadowtap.shadow_request import ShadowTarget, shadow_targets
from shadowtap.tasks import TaskSet
from shadowtap.upstream import UpstreamPool

if TYPE_CHECKING:
    from shadowtap.recorder import Recorder
    from shadowtap.scorers.runner import ScoringRunner

log = get_logger("shadowtap.server")
# Descriptors assumed for shadows when their budget is unlimited (sampling.max_inflight = 0).
DEFAULT_SHADOW_FDS = 64
# Scoring of exchanges whose shadows ended at the grace's end: a short while more, then they
# are recorded unscored.
SCORING_AFTER_GRACE_S = 2.0
# aiohttp waits for no handler at all when given 0: the least it is given.
MIN_DRAIN_S = 0.05
ADMIN_DRAIN_S = 1.0  # admin requests are short: a scrape, a probe, a page of /api

PRIMARY_SESSION = web.AppKey("primary_session", aiohttp.ClientSession)
SHADOW_SESSION = web.AppKey("shadow_session", aiohttp.ClientSession)
PRIMARY_POOL = web.AppKey("primary_pool", UpstreamPool)
SHADOW_POOLS: web.AppKey[dict[str, UpstreamPool]] = web.AppKey("shadow_pools")
RECORDER: web.AppKey[Recorder | None] = web.AppKey("recorder")
SCORING: web.AppKey[ScoringRunner | None] = web.AppKey("scoring")
HANDLER = web.AppKey("handler", ProxyHandler)


@dataclass
class Drain:
    """The grace period of one stop: in-flight work ends by `deadline` (loop time)."""

    grace_s: float
    deadline: float | None = None

    def begin(self) -> None:
        self.deadline = asyncio.get_running_loop().time() + self.grace_s

    def remaining(self) -> float:
        if self.deadline is None:
            return self.grace_s
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def upload_cutoff(self) -> float:
        """Uploads get half the grace; the request then still has the other half."""
        assert self.deadline is not None
        return self.deadline - self.grace_s / 2


class DrainingRunner(web.AppRunner):
    """An AppRunner whose drain ends with the grace, however long the uploads took.

    aiohttp waits `shutdown_timeout` for a handler, then as long again after cancelling the
    request's body, then cancels the handler: each wait gets half of what is left.
    """

    def __init__(self, app: web.Application, drain: Drain, **kwargs: Any) -> None:
        super().__init__(app, shutdown_timeout=drain.grace_s / 2, **kwargs)
        self._drain = drain

    async def cleanup(self) -> None:
        self._shutdown_timeout = max(MIN_DRAIN_S, self._drain.remaining() / 2)
        await super().cleanup()


@dataclass
class Served:
    runner: web.AppRunner
    listener: Listener
    port: int


class ShadowtapServer:
    def __init__(
        self,
        config: Config,
        registry: CollectorRegistry | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self._rng = rng
        self.ready = False
        self.shadow_tasks = TaskSet()
        self.exchange_tasks = TaskSet()
        self._drain = Drain(config.server.shutdown_grace_s)
        self._targets: list[ShadowTarget] = shadow_targets(config)
        self._app = web.Application(client_max_size=config.server.max_body_bytes)
        self._proxy: Served | None = None
        self._admin: Served | None = None

    @property
    def proxy_port(self) -> int:
        return self._proxy.port if self._proxy is not None else 0

    @property
    def admin_port(self) -> int:
        return self._admin.port if self._admin is not None else 0

    @property
    def handler(self) -> ProxyHandler:
        return self._app[HANDLER]

    @property
    def recorder(self) -> Recorder | None:
        return self._app.get(RECORDER)

    async def start(self) -> None:
        config, targets = self.config, self._targets
        prices = {"primary": Prices.of(config.primary)} | {t.name: t.prices for t in targets}
        self.metrics = Metrics(self.registry, enabled=config.server.metrics, prices=prices)
        self.metrics.prime(
            {"primary": "primary"} | {t.name: t.role for t in targets}, config.sampling.routes
        )
        app = self._app
        # No routes: every request goes straight to the handler (see `_serve`).
        app.cleanup_ctx.extend([self._sessions, self._recording, self._scoring, self._handling])

        server = config.server
        proxy_cap = fit_proxy_cap(
            server.max_connections,
            server.admin_max_connections,
            config.sampling.max_inflight or DEFAULT_SHADOW_FDS,
            open_file_limit(),
        )
        if proxy_cap < server.max_connections:
            log.warning(
                "connection_cap_lowered",
                configured=server.max_connections,
                effective=proxy_cap,
                open_file_limit=open_file_limit(),
            )
        # handler_cancellation: a client that disconnects cancels its upstream request at once.
        proxy_runner = DrainingRunner(
            app,
            self._drain,
            access_log=None,
            handler_cancellation=True,
            keepalive_timeout=server.idle_timeout_s,
            # The client's body is relayed as sent: a gzip-encoded request reaches the primary
            # gzip-encoded (decoded here, it went out as plain bytes labelled gzip).
            auto_decompress=False,
        )
        self._proxy = await self._serve(
            "proxy", proxy_runner, server.listen, ClientLimits.of(server, proxy_cap), direct=True
        )
        recorder = app[RECORDER]
        api_routes: list[web.AbstractRouteDef] = []
        if recorder is not None:
            from shadowtap.recorder import api_routes as recorder_routes

            api_routes = list(recorder_routes(recorder))
        admin_app = build_admin_app(
            self.registry,
            lambda: self.ready,
            api_routes,
            access=AdminAccess.of(server),
            health=recorder.health if recorder is not None else None,
        )
        admin_runner = web.AppRunner(
            admin_app,
            access_log=None,
            keepalive_timeout=server.idle_timeout_s,
            shutdown_timeout=ADMIN_DRAIN_S,
        )
        admin_limits = ClientLimits.of(server, server.admin_max_connections)
        try:
            self._admin = await self._serve(
                "admin", admin_runner, server.admin_listen, admin_limits
            )
        except BaseException:
            await self.stop()
            raise
        self.ready = True
        log.info(
            "started",
            listen=f"{split_host_port(server.listen)[0]}:{self.proxy_port}",
            admin=f"{split_host_port(server.admin_listen)[0]}:{self.admin_port}",
            primary=config.primary.url,
            targets=[t.name for t in targets],
            sampling_rate=config.sampling.rate,
            max_connections=proxy_cap,
            open_file_limit=open_file_limit(),
        )

    async def _serve(
        self,
        name: ListenerName,
        runner: web.AppRunner,
        address: str,
        limits: ClientLimits,
        direct: bool = False,
    ) -> Served:
        """Set the app up and listen. `direct`: the proxy handler serves every request itself,
        past aiohttp's router, match info and middleware chain, which a pass-through with one
        catch-all route does not need (they cost more per request than our sampling stage)."""
        listener = Listener(name, runner, limits, self.metrics)
        try:
            await runner.setup()  # the app's cleanup_ctx set-up runs here
            handler = self._app[HANDLER].handle if direct else None
            port = await listener.start(*split_host_port(address), handler=handler)
        except BaseException:
            await runner.cleanup()  # tears down what was set up, in reverse
            raise
        return Served(runner, listener, port)

    async def stop(self) -> None:
        """Stop accepting, drain within the grace period, flush, close (see the module doc)."""
        proxy, admin = self._proxy, self._admin
        self._proxy = self._admin = None
        self.ready = False
        if proxy is not None:
            self._drain.begin()
            proxy.listener.close()
            await proxy.listener.finish_uploads(self._drain.upload_cutoff())
            await proxy.runner.cleanup()  # the drain, then the cleanup_ctx teardown
        if admin is not None:
            admin.listener.close()
            await admin.runner.cleanup()
        if proxy is not None:
            log.info("stopped")

    # -- the proxy app's resources, set up in this order and torn down in reverse ---------------
    async def _sessions(self, app: web.Application) -> AsyncIterator[None]:
        # Two pools: hung shadows can exhaust their own connections, never the primary's.
        # Neither keeps cookies: a session's jar would send a cookie one client's answer set
        # (a provider's `__cf_bm`) with every later request, whoever sent it.
        # It relays only what the primary's own client cannot (HEAD, upgrades), and keeps no
        # connection: aiohttp's client would read bytes a primary sends past a HEAD answer, on
        # the idle connection, as the next request's answer.
        app[PRIMARY_SESSION] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, force_close=True),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # relay the primary's bytes exactly as encoded
            timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        # No pool limit: the shadow budget (and each judge's own) already bounds what is open,
        # and a second limit here would only turn budgeted shadows into spurious timeouts.
        app[SHADOW_SESSION] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        # The primary's own client (shadowtap.upstream): what aiohttp's did per request for
        # ~350k CPU instructions, for a fraction; the session above keeps HEAD and upgrades.
        app[PRIMARY_POOL] = UpstreamPool.of(self.config.primary.url)
        # Each shadow target's own connections, by the same client (judges keep the session).
        app[SHADOW_POOLS] = {t.name: UpstreamPool.of(t.url) for t in self._targets}
        yield
        for pool in app[SHADOW_POOLS].values():
            await pool.close()
        await app[PRIMARY_POOL].close()
        await app[SHADOW_SESSION].close()
        await app[PRIMARY_SESSION].close()

    async def _recording(self, app: web.Application) -> AsyncIterator[None]:
        recorder = None
        if self.config.storage.enabled:
            from shadowtap.recorder import Recorder  # loaded only when storage is on

            recorder = Recorder(self.config.storage, self.metrics)
            await asyncio.to_thread(recorder.start)
        app[RECORDER] = recorder
        yield
        if recorder is not None:
            await asyncio.to_thread(recorder.close)  # the final flush

    async def _scoring(self, app: web.Application) -> AsyncIterator[None]:
        config = self.config
        runner = None
        if config.scorers:
            from shadowtap.scorers.pool import CpuSettings
            from shadowtap.scorers.registry import build_scorers  # deps load only if configured
            from shadowtap.scorers.runner import ScoringRunner

            scorers = build_scorers(config.scorers)
            settings = CpuSettings.of(config.server)
            runner = ScoringRunner(scorers, self.metrics, app[SHADOW_SESSION], settings)
        app[SCORING] = runner
        yield
        if runner is not None:
            await runner.close()  # kills workers still running after a short wait

    async def _handling(self, app: web.Application) -> AsyncIterator[None]:
        config, targets = self.config, self._targets
        recorder = app[RECORDER]
        app[HANDLER] = ProxyHandler(
            primary_url=config.primary.url,
            primary_timeout=aiohttp.ClientTimeout(total=config.primary.timeout_s),
            max_body_bytes=config.server.max_body_bytes,
            primary_session=app[PRIMARY_SESSION],
            primary_pool=app[PRIMARY_POOL],
            shadow_pools=app[SHADOW_POOLS],
            shadow_session=app[SHADOW_SESSION],
            metrics=self.metrics,
            pipeline=ExchangePipeline(app[SCORING], [recorder] if recorder is not None else []),
            policy=SamplingPolicy(
                rate=config.sampling.rate,
                routes=frozenset(config.sampling.routes),
                target_rates={t.name: t.rate for t in targets},
                max_body_bytes=config.sampling.max_body_bytes,
            ),
            draws=Draws(config.sampling.key, [t.name for t in targets], self._rng),
            budget=ShadowBudget(config.sampling.max_inflight, config.sampling.max_per_second),
            targets={t.name: t for t in targets},
            shadow_tasks=self.shadow_tasks,
            exchange_tasks=self.exchange_tasks,
            primary_prices=Prices.of(config.primary),
            target_secrets=tuple(secret for t in targets for secret in t.secrets()),
            slice_headers=config.report.slice_headers(),
            route_dialects=route_dialects(config.sampling),
            bounds=ShadowBounds(config.sampling, [t.name for t in targets], self.metrics),
        )
        yield
        # The listener has drained: shadows get what is left of the grace.
        if not await self.shadow_tasks.wait(self._drain.remaining()):
            log.warning("shadows_cancelled", count=len(self.shadow_tasks))
            await self.shadow_tasks.cancel_all()  # each is recorded "cancelled at shutdown"
        scoring_s = max(self._drain.remaining(), SCORING_AFTER_GRACE_S)
        if not await self.exchange_tasks.wait(scoring_s):
            log.warning("scoring_cancelled", count=len(self.exchange_tasks))
            await self.exchange_tasks.cancel_all()  # the pipeline records them unscored


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path.

    Every sampled exchange waits in the record queue long enough to survive young collections,
    so older generations fill and full collections run often, each walking every object left
    from start-up (DuckDB, pyarrow, pydantic: hundreds of thousands). Freezing those after
    start moves them out of every collection, and a larger first-generation threshold makes
    young collections rarer; measured, recording's cost per request roughly halved.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def serve(config: Config, stop: asyncio.Event) -> None:
    raise_open_file_limit()  # before listening: the connection caps are fitted to it
    server = ShadowtapServer(config)
    await server.start()
    tune_gc()
    started = time.monotonic()
    try:
        await stop.wait()
    finally:
        log.info("stopping", uptime_s=round(time.monotonic() - started, 1))
        await server.stop()
