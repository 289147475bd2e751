"""Asks gateways for their operational records through a gateway's client side, concurrently, each within a timeout."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.core.globalconf import Gateway, GlobalConf
from gateway.monitoring.opquery import OpQuery
from gateway.monitoring.oprecords import SERVICE_CODE
from gateway.proxy.httpio import read_limited

MAX_ANSWER_BYTES = 64 * 1024 * 1024


@dataclass
class GatewayAnswer:
    server: str
    status: str  # ok, timeout, unreachable, denied, error or skipped
    ms: float
    payload: dict[str, Any] | None = None
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"server": self.server, "status": self.status, "ms": round(self.ms, 1)}
        if self.error:
            out["error"] = self.error
        return out


def route(gw: Gateway) -> str | None:
    """A subsystem served by the gateway, through which its operational data service is addressed."""
    return sorted(gw.clients)[0] if gw.clients else None


class Fanout:
    """One HTTP client for the gateway's client side; ``ask_all`` never takes longer than the timeout (plus a
    little), and says of each gateway whether and how it answered."""

    def __init__(self, gateway_url: str, client: str, timeout: float, max_concurrency: int = 32) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.client = client
        self.timeout = timeout
        self._limit = asyncio.Semaphore(max_concurrency)
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                                             skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def ask(self, gw: Gateway, query: OpQuery) -> GatewayAnswer:
        started = time.perf_counter()
        subsystem = route(gw)
        if subsystem is None:
            return GatewayAnswer(gw.server, "skipped", 0.0, error="serves no subsystem to address it through")
        assert self.session is not None
        url = f"{self.gateway_url}/r1/{subsystem}/{SERVICE_CODE}"
        headers = {"X-Road-Client": self.client, "X-Road-Security-Server": gw.server,
                   "Content-Type": "application/json", "Accept": "application/json"}
        body = json.dumps(query.to_json(), separators=(",", ":"))
        try:
            async with self._limit, self.session.post(url, data=body, headers=headers,
                                                      timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                data = await read_limited(resp.content, MAX_ANSWER_BYTES)
                error_type = resp.headers.get("X-Road-Error")
                status = resp.status
        except TimeoutError:
            return GatewayAnswer(gw.server, "timeout", _ms(started), error=f"no answer within {self.timeout:g} s")
        except aiohttp.ClientError as exc:
            return GatewayAnswer(gw.server, "error", _ms(started),
                                 error=f"client side {self.gateway_url} failed: {exc.__class__.__name__}")
        if data is None:
            return GatewayAnswer(gw.server, "error", _ms(started), error="answer is too large")
        try:
            payload = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return GatewayAnswer(gw.server, "error", _ms(started), error=f"HTTP {status}: answer is not JSON")
        if error_type or status != 200 or not isinstance(payload, dict):
            message = payload.get("message", "") if isinstance(payload, dict) else ""
            kind = error_type or f"HTTP {status}"
            state = ("denied" if kind.endswith(".AccessDenied")
                     else "unreachable" if kind.endswith((".NetworkError", ".ServiceTimeout")) else "error")
            return GatewayAnswer(gw.server, state, _ms(started), error=f"{kind}: {message}"[:500])
        return GatewayAnswer(gw.server, "ok", _ms(started), payload=payload)

    async def ask_all(self, gateways: Sequence[Gateway], query: OpQuery) -> list[GatewayAnswer]:
        return list(await asyncio.gather(*(self.ask(gw, query) for gw in gateways)))

    async def ask_each(self, queries: Sequence[tuple[Gateway, OpQuery]]) -> list[GatewayAnswer]:
        return list(await asyncio.gather(*(self.ask(gw, q) for gw, q in queries)))


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def gateways_of(conf: GlobalConf) -> list[Gateway]:
    return list(conf.document.gateways)
