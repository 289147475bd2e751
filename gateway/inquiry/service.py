"""`wasl inquiry serve`: the inquiry's JSON API, its OpenAPI document, the built-in dashboard, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.inquiry import openapi, query
from gateway.inquiry.config import InquirySettings
from gateway.inquiry.engine import Inquiry
from gateway.inquiry.fanout import Fanout
from gateway.proxy.confclient import GlobalConfClient

log = logging.getLogger("wasl.inquiry")
STATIC = Path(__file__).parent / "static"
STATIC_FILES = {  # name -> content type; served from memory, read once at start
    "app.js": "text/javascript", "app.css": "text/css", "i18n.js": "text/javascript",
    "vendor/uPlot.iife.min.js": "text/javascript", "vendor/uPlot.min.css": "text/css",
    "vendor/uPlot.LICENSE": "text/plain",
}
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

REGISTRY = CollectorRegistry()
REQUESTS = Counter("wasl_inquiry_requests", "Inquiry API requests", ["endpoint", "status_class"], registry=REGISTRY)
DURATION = Histogram("wasl_inquiry_request_duration_seconds", "Inquiry API request duration", ["endpoint"],
                     registry=REGISTRY, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ANSWERS = Counter("wasl_inquiry_gateway_answers", "Gateways' answers to the inquiry, by outcome", ["status"],
                  registry=REGISTRY)
UNANSWERED = Gauge("wasl_inquiry_unanswered_gateways", "Gateways that did not answer the last inquiry",
                   registry=REGISTRY)
GLOBALCONF_AGE = Gauge("wasl_inquiry_globalconf_age_seconds", "Age of the held global configuration",
                       registry=REGISTRY)


def error_response(status: int, type_: str, message: str) -> web.Response:
    body = {"type": type_, "message": message, "detail": str(uuid.uuid4())}
    return web.json_response(body, status=status, headers={"X-Road-Error": type_})


class InquiryService:
    def __init__(self, settings: InquirySettings) -> None:
        self.settings = settings
        self.conf = GlobalConfClient(settings.anchor, settings.state_dir, settings.globalconf_refresh_seconds)
        self.fanout = Fanout(settings.gateway_url, settings.client, settings.gateway_timeout_seconds,
                             settings.max_concurrency)
        self.inquiry = Inquiry(self.fanout, self.conf)
        self.static: dict[str, bytes] = {}
        self._openapi = json.dumps(openapi.document(), indent=1).encode()

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    async def _background(self, app: web.Application):  # type: ignore[no-untyped-def]
        self.static = await asyncio.to_thread(_read_static)
        await self.fanout.open()
        registry_session = aiohttp.ClientSession()
        await asyncio.to_thread(self.conf.load_cached)
        task = asyncio.create_task(self.conf.run(registry_session))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await registry_session.close()
        await self.fanout.close()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._measure])
        app.cleanup_ctx.append(self._background)
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/static/{name:.+}", self.static_file)
        r.add_get("/openapi.json", self.openapi_doc)
        r.add_get("/api/v1/transaction", self._api(self.transaction))
        r.add_get("/api/v1/transactions", self._api(self.transactions))
        r.add_get("/api/v1/aggregates", self._api(self.aggregates))
        r.add_get("/api/v1/gateways", self._api(self.gateways))
        r.add_get("/livez", self.livez)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.metrics)
        return app

    @web.middleware
    async def _measure(self, request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.resource
        endpoint = route.canonical if route is not None else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        REQUESTS.labels(endpoint, f"{response.status // 100}xx").inc()
        DURATION.labels(endpoint).observe(time.perf_counter() - started)
        if isinstance(response, web.HTTPException):
            raise response
        return response

    # -- the API ------------------------------------------------------------------------------------------------------

    def _api(self, fn: Callable[[dict[str, str]], Awaitable[dict[str, Any]]]):  # type: ignore[no-untyped-def]
        async def handle(request: web.Request) -> web.Response:
            params = dict(request.query)
            if len(params) != len(request.query):
                return error_response(400, query.INVALID, "a parameter is repeated; give each at most once")
            try:
                result = await fn(params)
            except query.InquiryError as exc:
                return error_response(exc.status, exc.type, str(exc))
            except LookupError as exc:
                return error_response(503, "Server.Inquiry.OutdatedGlobalConf", str(exc))
            unanswered = result.get("unanswered")
            if unanswered is not None:
                UNANSWERED.set(len(unanswered))
            for g in result.get("gateways", []):
                ANSWERS.labels(g.get("status", "error")).inc()
            return web.json_response(result, dumps=_dumps, headers={"Cache-Control": "no-store"})

        return handle

    async def transaction(self, params: dict[str, str]) -> dict[str, Any]:
        return await self.inquiry.transaction(query.lookup(params))

    async def transactions(self, params: dict[str, str]) -> dict[str, Any]:
        return await self.inquiry.transactions(query.listing(params, _now_ms()))

    async def aggregates(self, params: dict[str, str]) -> dict[str, Any]:
        return await self.inquiry.aggregates(query.aggregation(params, _now_ms()))

    async def gateways(self, params: dict[str, str]) -> dict[str, Any]:
        query.no_params("gateways", params)
        return await self.inquiry.health()

    # -- the rest -----------------------------------------------------------------------------------------------------

    async def openapi_doc(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(body=self.static["index.html"], content_type="text/html", charset="utf-8",
                            headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache",
                                     "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    async def static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.Response(body=self.static[name], content_type=STATIC_FILES[name], charset="utf-8",
                            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})

    async def livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        conf = self.conf.current
        if conf is None:
            return web.Response(status=503, text=f"not ready: no global configuration ({self.conf.last_error})\n")
        if conf.is_expired(dt.datetime.now(dt.UTC)):
            return web.Response(status=503, text="not ready: global configuration expired\n")
        assert self.fanout.session is not None
        try:
            async with self.fanout.session.get(f"{self.fanout.gateway_url}/livez",
                                               timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status != 200:
                    return web.Response(status=503, text=f"not ready: gateway answered HTTP {resp.status}\n")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.Response(status=503, text=f"not ready: gateway {self.fanout.gateway_url} unreachable "
                                                 f"({exc.__class__.__name__})\n")
        return web.Response(text="ready\n")

    async def metrics(self, request: web.Request) -> web.Response:
        conf = self.conf.current
        if conf is not None:
            GLOBALCONF_AGE.set(max(0.0, (dt.datetime.now(dt.UTC) - conf.document.generated_at).total_seconds()))
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _read_static() -> dict[str, bytes]:
    return {name: (STATIC / name).read_bytes() for name in ("index.html", *STATIC_FILES)}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


async def start(settings: InquirySettings, port: int | None = None) -> tuple[web.AppRunner, int, InquiryService]:
    """Start in this event loop (tests, the demo); returns the runner, the bound port and the service."""
    service = InquiryService(settings)
    runner = web.AppRunner(service.app(), access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port if port is None else port)
    await site.start()
    sockets = getattr(site._server, "sockets", None)
    return runner, (sockets[0].getsockname()[1] if sockets else settings.port), service


def serve(settings: InquirySettings) -> None:
    web.run_app(InquiryService(settings).app(), host=settings.host, port=settings.port, print=None,
                access_log=None)
