"""Starts the management plane on a node's event loop: API + UI + /metrics, and the Prometheus port."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from warren.api.backend import ManagementBackend
from warren.api.http import Api, Router
from warren.api.metrics import make_registry
from warren.api.node_backend import NodeBackend
from warren.api.rates import RateTracker, RequestLimiter
from warren.api.routes import Endpoints
from warren.limits import DEFAULT_LIMITS

STATIC = Path(__file__).parent / "static"
RATE_SAMPLE_SECONDS = 1.0


def metrics_handler(registry: CollectorRegistry) -> Any:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
    return handle


def add_metrics_routes(app: web.Application, backend: ManagementBackend) -> None:
    """RabbitMQ's endpoints: /metrics aggregated, /metrics/per-object with a series per queue."""
    app.router.add_get("/metrics", metrics_handler(make_registry(backend)))
    app.router.add_get("/metrics/per-object", metrics_handler(make_registry(backend, per_queue=True)))


def build_app(backend: ManagementBackend, requests_per_second: float, burst: int,
              health_requires_auth: bool = False,
              max_body_bytes: int = DEFAULT_LIMITS.api_max_body_bytes) -> tuple[web.Application, RateTracker]:
    """The aiohttp application for the HTTP port (no listening, no background tasks)."""
    rates = RateTracker()
    router = Router()
    Endpoints(backend, rates).register(router)
    api = Api(router, backend.authenticate, backend.may_log_in_from, RequestLimiter(requests_per_second, burst),
              health_requires_auth)
    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_route("*", "/api/{tail:.*}", api.dispatch)
    app.router.add_route("*", "/api", api.dispatch)
    app.router.add_route("*", "/v1/{tail:.*}", api.dispatch)  # Warren's own API (cluster)
    add_metrics_routes(app, backend)

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    return app, rates


@dataclass
class HttpStarted:
    """What ``start_http`` returns: call ``await runner.cleanup()`` to stop everything."""

    runner: Any
    http_port: int
    prometheus_port: int | None
    rates: RateTracker


@dataclass
class _Runners:
    runners: list[web.AppRunner]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def cleanup(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for runner in self.runners:
            await runner.cleanup()


async def _sample_rates(backend: ManagementBackend, rates: RateTracker) -> None:
    while True:
        now = time.monotonic()
        rates.sample(now, backend.totals())
        rates.depths.sample(now, backend.queue_depths())
        await asyncio.sleep(RATE_SAMPLE_SECONDS)


async def start_http(runtime: Any, host: str, port: int, prometheus_port: int | None = None) -> HttpStarted:
    """Serve the management API, UI and /metrics on ``host:port`` (0 picks a port), and /metrics
    alone on ``prometheus_port`` when given. ``runtime`` is a ``NodeRuntime`` (``.node``, ``.config``)."""
    backend = NodeBackend(runtime)
    runtime.cluster_stats = backend.local_stats  # what this node answers {"op": "stats"} with
    limits = runtime.node.limits
    health_auth = bool(getattr(runtime.config, "health_checks_require_auth", False))
    app, rates = build_app(backend, limits.api_requests_per_second, limits.api_burst, health_auth,
                            limits.api_max_body_bytes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    runners = _Runners([runner])
    http_port = _bound_port(runner)
    bound_prometheus: int | None = None
    if prometheus_port is not None:
        prom_app = web.Application()
        add_metrics_routes(prom_app, backend)
        prom_runner = web.AppRunner(prom_app, access_log=None)
        await prom_runner.setup()
        try:
            await web.TCPSite(prom_runner, host, prometheus_port).start()
        except OSError:
            await prom_runner.cleanup()
            await runner.cleanup()
            raise
        runners.runners.append(prom_runner)
        bound_prometheus = _bound_port(prom_runner)
    runners.tasks.append(asyncio.get_running_loop().create_task(_sample_rates(backend, rates)))
    return HttpStarted(runners, http_port, bound_prometheus, rates)


def _bound_port(runner: web.AppRunner) -> int:
    server = runner.server
    assert server is not None
    for site in runner.sites:
        sock_server = getattr(site, "_server", None)
        if sock_server is not None and sock_server.sockets:
            return int(sock_server.sockets[0].getsockname()[1])
    raise AssertionError("site has no socket")
