"""Prometheus metrics of a gateway: traffic, latency split into backend time and gateway overhead, sizes,
in-flight work, global-configuration freshness, certificate expiry and message-log backlog.

Several worker processes share one view through prometheus-client's multiprocess mode: ``wasl gateway serve``
points PROMETHEUS_MULTIPROC_DIR at a fresh folder before any worker starts. Labels are bounded by the
federation's size (members, services, fault codes), never by message ids.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

PREFIX = "wasl"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)

REQUESTS = Counter(f"{PREFIX}_requests", "Exchanges handled, by side, protocol, client member, service and outcome",
                   ["side", "protocol", "client_member", "service", "status_class", "fault_code"])
DURATION = Histogram(f"{PREFIX}_request_duration_seconds", "Time from request in to response out",
                     ["side", "protocol"], buckets=_LATENCY_BUCKETS)
BACKEND_DURATION = Histogram(f"{PREFIX}_backend_duration_seconds", "Time the backend service took (provider side)",
                             ["service"], buckets=_LATENCY_BUCKETS)
OVERHEAD = Histogram(f"{PREFIX}_gateway_overhead_seconds",
                     "Time spent in this gateway: total minus the time waiting for the next hop",
                     ["side"], buckets=_LATENCY_BUCKETS)
REQUEST_SIZE = Histogram(f"{PREFIX}_request_size_bytes", "Request body size", ["side"], buckets=_SIZE_BUCKETS)
RESPONSE_SIZE = Histogram(f"{PREFIX}_response_size_bytes", "Response body size", ["side"], buckets=_SIZE_BUCKETS)
IN_FLIGHT = Gauge(f"{PREFIX}_in_flight_requests", "Exchanges in progress", ["side"], multiprocess_mode="livesum")
GLOBALCONF_AGE = Gauge(f"{PREFIX}_globalconf_age_seconds", "Age of the held global configuration",
                       multiprocess_mode="min")
GLOBALCONF_EXPIRY = Gauge(f"{PREFIX}_globalconf_expiry_timestamp_seconds",
                          "When the held global configuration expires (Unix time)", multiprocess_mode="max")
CERT_EXPIRY = Gauge(f"{PREFIX}_certificate_expiry_timestamp_seconds", "When a certificate of this gateway expires",
                    ["kind", "member"], multiprocess_mode="min")
OCSP_RESPONSE_AGE = Gauge(f"{PREFIX}_ocsp_response_age_seconds",
                          "Age (from thisUpdate) of the OCSP response held for a certificate of this gateway",
                          ["certificate"], multiprocess_mode="max")
OCSP_FETCH_FAILURES = Counter(f"{PREFIX}_ocsp_fetch_failures_total",
                              "OCSP refreshes for a certificate of this gateway that got no usable response",
                              ["certificate"])
MESSAGELOG_PENDING = Gauge(f"{PREFIX}_messagelog_pending_records", "Message-log records waiting to be committed",
                           multiprocess_mode="livesum")
MESSAGELOG_TIMESTAMPING_STATE = Gauge(
    f"{PREFIX}_messagelog_timestamping_state",
    "Message-log timestamping: 0 ok, 1 failing within the grace period, 2 failed (new messages are refused)",
    multiprocess_mode="max")
MESSAGELOG_TIMESTAMPING_BACKLOG = Gauge(f"{PREFIX}_messagelog_timestamping_backlog_records",
                                        "Message-log records not yet covered by a timestamp token",
                                        multiprocess_mode="max")
MESSAGELOG_TIMESTAMPING_FAILING = Gauge(f"{PREFIX}_messagelog_timestamping_failing_seconds",
                                        "How long timestamping has been failing, as the grace period counts (0 if ok)",
                                        multiprocess_mode="max")
MESSAGELOG_TIMESTAMPING_LAST_SUCCESS = Gauge(f"{PREFIX}_messagelog_timestamping_last_success_timestamp_seconds",
                                             "When timestamping last succeeded (Unix time)", multiprocess_mode="max")
PEER_UP = Gauge(f"{PREFIX}_peer_gateway_up", "1 when the last exchange with a peer gateway reached it",
                ["peer"], multiprocess_mode="max")
OPMON_WRITTEN = Counter(f"{PREFIX}_opmon_records_written", "Operational records committed to the store")
OPMON_DROPPED = Counter(f"{PREFIX}_opmon_records_dropped",
                        "Operational records lost: queue full or the store failed (the traffic itself went on)")
BUILD_INFO = Gauge(f"{PREFIX}_build_info", "Build information", ["version"], multiprocess_mode="max")


def status_class(status: int) -> str:
    return f"{status // 100}xx"


# ``Metric.labels`` validates and locks on every call (~3 µs); an exchange touches seven series, so each series'
# child is looked up once and kept. The label sets are bounded (see above), and so are these caches.
@functools.lru_cache(maxsize=8192)
def _requests(side: str, protocol: str, client_member: str, service: str, status: str, fault_code: str) -> Any:
    return REQUESTS.labels(side, protocol, client_member, service, status, fault_code)


@functools.lru_cache(maxsize=8)
def _in_flight(side: str) -> Any:
    return IN_FLIGHT.labels(side)


@functools.lru_cache(maxsize=64)
def _side_series(side: str, protocol: str) -> tuple[Any, Any, Any, Any]:
    """(duration, overhead, request size, response size) for one side and protocol."""
    return DURATION.labels(side, protocol), OVERHEAD.labels(side), REQUEST_SIZE.labels(side), RESPONSE_SIZE.labels(side)


class Exchange:
    """Measures one exchange on one side; ``finish`` records it (~20 µs for both, measured on the 2-core bench machine).

    With an ``opmon`` sink it also carries what the operational record needs: the signed request manifest and the
    peer gateway (``describe``), the fault's message (``failed``) and when the wait on the next hop ended."""

    __slots__ = ("_backend", "fault_message", "manifest", "opmon", "peer_server", "protocol", "side", "started",
                 "started_ms", "wait_ended_ms")

    def __init__(self, side: str, protocol: str, opmon: OpSink | None = None) -> None:
        self.side = side
        self.protocol = protocol
        self.started = time.perf_counter()
        self.started_ms = int(time.time() * 1000)
        self._backend = 0.0
        self.opmon = opmon
        self.manifest: Any = None
        self.peer_server: str | None = None
        self.fault_message: str | None = None
        self.wait_ended_ms: int | None = None
        _in_flight(side).inc()

    def waited(self, seconds: float) -> None:
        """Time spent waiting on the next hop (peer gateway or backend), not on this gateway."""
        self._backend += seconds
        self.wait_ended_ms = int(time.time() * 1000)

    @property
    def backend_seconds(self) -> float:
        return self._backend

    def describe(self, manifest: Any, peer_server: str | None) -> None:
        """The signed request manifest of this exchange and the other side's gateway (server id)."""
        self.manifest = manifest
        self.peer_server = peer_server

    def failed(self, fault: Any) -> None:
        self.fault_message = getattr(fault, "message", None) or str(fault)

    def finish(self, *, client_member: str, service: str, status: int, fault_code: str = "",
               request_bytes: int = 0, response_bytes: int = 0) -> None:
        total = time.perf_counter() - self.started
        _in_flight(self.side).dec()
        duration, overhead, request_size, response_size = _side_series(self.side, self.protocol)
        _requests(self.side, self.protocol, client_member, service, status_class(status), fault_code).inc()
        duration.observe(total)
        overhead.observe(max(total - self._backend, 0.0))
        request_size.observe(request_bytes)
        response_size.observe(response_bytes)
        if self.opmon is not None:
            self.opmon.record(self, total_s=total, client_member=client_member, service=service, status=status,
                              fault_code=fault_code, request_bytes=request_bytes, response_bytes=response_bytes)


class ExchangeLabels:
    """The metric labels of an exchange, known once its headers are parsed (bounded: member and service)."""

    __slots__ = ("client_member", "service")

    def __init__(self) -> None:
        self.client_member = ""
        self.service = ""

    def set(self, client: Any, service: Any) -> None:
        """From a parsed client id and service id (gateway.core.identifiers)."""
        self.client_member = client.member.path()
        self.service = service.unversioned().path()


class OpSink(Protocol):
    """Where finished exchanges go for operational monitoring (opwriter.OpMonitor)."""

    def record(self, exchange: Exchange, *, total_s: float, client_member: str, service: str, status: int,
               fault_code: str, request_bytes: int, response_bytes: int) -> None: ...


def registry_for_scrape() -> CollectorRegistry | None:
    """In multiprocess mode, a registry that merges every worker's files; else None (the default registry)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def metrics_handler(before_scrape: Callable[[], None] | None = None):  # type: ignore[no-untyped-def]
    async def handle(request: web.Request) -> web.Response:
        if before_scrape is not None:
            before_scrape()
        registry = registry_for_scrape()
        data = generate_latest(registry) if registry is not None else generate_latest()
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle
