"""`ShadowtapServer`: wires config into the proxy and admin apps, and drains them on stop.

Usable in-process (tests, the demo, benchmarks) with ports 0:

    server = ShadowtapServer(config)
    await server.start()          # server.proxy_port, server.admin_port are the bound ports
    ...
    await server.stop()           # drain: primaries, then shadows, then scoring, then storage
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import multiprocessing
import random
import time
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from shadowtap.admin import AdminAccess, build_admin_app
from shadowtap.config import Config, split_host_port
from shadowtap.exchange import ExchangeSink
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
from shadowtap.pipeline import ExchangePipeline, Scoring
from shadowtap.pricing import Prices
from shadowtap.sampling import Draws, SamplingPolicy, ShadowBudget
from shadowtap.shadow import shadow_targets
from shadowtap.tasks import TaskSet

log = get_logger("shadowtap.server")
# Descriptors assumed for shadows when their budget is unlimited (sampling.max_inflight = 0).
DEFAULT_SHADOW_FDS = 64


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
        self.proxy_port = 0
        self.admin_port = 0
        self.ready = False
        self.recorder: Any = None
        self._scoring: Any = None
        self._scoring_pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._runners: list[web.AppRunner] = []
        self._listeners: list[Listener] = []
        self._sessions: list[aiohttp.ClientSession] = []
        self.shadow_tasks = TaskSet()
        self.exchange_tasks = TaskSet()

    async def start(self) -> None:
        config = self.config
        targets = shadow_targets(config)
        prices = {"primary": Prices.of(config.primary)}
        prices |= {t.name: t.prices for t in targets}
        self.metrics = Metrics(self.registry, enabled=config.server.metrics, prices=prices)
        self.metrics.prime(
            {"primary": "primary"} | {t.name: t.role for t in targets}, config.sampling.routes
        )
        # Two pools: hung shadows can exhaust their own connections, never the primary's.
        primary_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            auto_decompress=False,  # relay the primary's bytes exactly as encoded
            timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        # No pool limit: the shadow budget (and each judge's own) already bounds what is open,
        # and a second limit here would only turn budgeted shadows into spurious timeouts.
        shadow_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._sessions = [primary_session, shadow_session]

        sinks: list[ExchangeSink] = []
        if config.storage.enabled:
            from shadowtap.recorder import Recorder  # loaded only when storage is on

            self.recorder = Recorder(config.storage, self.metrics)
            await asyncio.to_thread(self.recorder.start)
            sinks.append(self.recorder)
        scoring: Scoring | None = None
        if config.scorers:
            from shadowtap.scorers.registry import (
                build_scorers,  # scorer deps load only when configured
            )
            from shadowtap.scorers.runner import ScoringRunner

            if config.server.scoring_processes:
                self._scoring_pool = concurrent.futures.ProcessPoolExecutor(
                    config.server.scoring_processes, mp_context=multiprocessing.get_context("spawn")
                )
            self._scoring = scoring = ScoringRunner(
                build_scorers(config.scorers), self.metrics, shadow_session, self._scoring_pool
            )

        self.handler = ProxyHandler(
            primary_url=config.primary.url,
            primary_timeout=aiohttp.ClientTimeout(total=config.primary.timeout_s),
            max_body_bytes=config.server.max_body_bytes,
            primary_session=primary_session,
            shadow_session=shadow_session,
            metrics=self.metrics,
            pipeline=ExchangePipeline(scoring, sinks),
            policy=SamplingPolicy(
                rate=config.sampling.rate,
                routes=frozenset(config.sampling.routes),
                target_rates={t.name: t.rate for t in targets},
            ),
            draws=Draws(config.sampling.key, [t.name for t in targets], self._rng),
            budget=ShadowBudget(config.sampling.max_inflight, config.sampling.max_per_second),
            targets={t.name: t for t in targets},
            shadow_tasks=self.shadow_tasks,
            exchange_tasks=self.exchange_tasks,
            primary_prices=prices["primary"],
            target_secrets=tuple(secret for t in targets for secret in t.secrets()),
        )
        proxy_app = web.Application(client_max_size=config.server.max_body_bytes)
        proxy_app.router.add_route("*", "/{tail:.*}", self.handler.handle)

        api_routes: list[web.AbstractRouteDef] = []
        if self.recorder is not None:
            from shadowtap.recorder import api_routes as recorder_routes

            api_routes = list(recorder_routes(self.recorder))
        admin_app = build_admin_app(
            self.registry,
            lambda: self.ready,
            api_routes,
            access=AdminAccess.of(config.server),
            health=self.recorder.health if self.recorder is not None else None,
        )

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
        self.proxy_port = await self._listen(
            "proxy",
            web.AppRunner(
                proxy_app,
                access_log=None,
                handler_cancellation=True,
                keepalive_timeout=server.idle_timeout_s,
            ),
            server.listen,
            ClientLimits.of(server, proxy_cap),
        )
        self.admin_port = await self._listen(
            "admin",
            web.AppRunner(admin_app, access_log=None, keepalive_timeout=server.idle_timeout_s),
            server.admin_listen,
            ClientLimits.of(server, server.admin_max_connections),
        )
        self.ready = True
        log.info(
            "started",
            listen=f"{split_host_port(config.server.listen)[0]}:{self.proxy_port}",
            admin=f"{split_host_port(config.server.admin_listen)[0]}:{self.admin_port}",
            primary=config.primary.url,
            targets=[t.name for t in targets],
            sampling_rate=config.sampling.rate,
            max_connections=proxy_cap,
            open_file_limit=open_file_limit(),
        )

    async def _listen(
        self, name: ListenerName, runner: web.AppRunner, address: str, limits: ClientLimits
    ) -> int:
        await runner.setup()
        listener = Listener(name, runner, limits, self.metrics)
        bound = await listener.start(*split_host_port(address))
        self._runners.append(runner)
        self._listeners.append(listener)
        return bound

    async def stop(self) -> None:
        """Stop accepting, let in-flight work finish within the grace period, flush, close."""
        self.ready = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.server.shutdown_grace_s
        if not self._runners:
            return
        proxy_runner, admin_runner = self._runners
        proxy_listener, admin_listener = self._listeners
        proxy_listener.close()  # no new connections; in-flight requests go on
        if self.handler.inflight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.handler.idle.wait(), deadline - loop.time())
        await proxy_runner.cleanup()
        if not await self.shadow_tasks.wait(max(0.0, deadline - loop.time())):
            log.warning("shadows_cancelled", count=len(self.shadow_tasks))
            await self.shadow_tasks.cancel_all()
        # Scoring is bounded by the scorers' own timeouts; give it what is left, at least 5 s.
        if not await self.exchange_tasks.wait(max(5.0, deadline - loop.time())):
            await self.exchange_tasks.cancel_all()
        if self._scoring is not None:
            await self._scoring.close()
        if self._scoring_pool is not None:
            await asyncio.to_thread(self._scoring_pool.shutdown, wait=True, cancel_futures=True)
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close)
        for session in self._sessions:
            await session.close()
        admin_listener.close()
        await admin_runner.cleanup()
        self._runners = []
        self._listeners = []
        log.info("stopped")


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
