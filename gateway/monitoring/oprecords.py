"""Operational records: one per transaction and side, no payload, built from what a gateway measured of an exchange."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from operator import attrgetter
from typing import Any

from gateway.monitoring import opstats
from gateway.monitoring.tracecontext import trace_id_of

SERVICE_CODE = "getSecurityServerOperationalData"
"""The federation service through which a gateway hands out its operational records (X-Road's name)."""


@dataclass(slots=True)
class OpRecord:
    """What X-Road's operational monitoring records (PR-OPMON), with times in Unix milliseconds.

    ``backend_ms`` is the time spent waiting on the next hop: the provider's gateway for the client side, the
    backend service for the provider side. ``overhead_ms`` is the rest: the gateway's own share."""

    side: str  # "client" or "provider"
    request_in_ms: int
    request_out_ms: int | None
    response_in_ms: int | None
    response_out_ms: int
    xroad_id: str
    request_id: str
    user_id: str | None
    issue: str | None
    traceparent: str | None
    trace_id: str | None
    client: str  # path form: the subsystem (or member) that called
    client_member: str
    service: str  # path form, with the version if any
    service_key: str  # without the version: what filters and aggregates use
    provider_member: str
    protocol: str  # soap, rest, or peer when a frame could not be read
    protocol_version: str | None
    rest_method: str | None
    rest_path: str | None
    request_size: int
    response_size: int
    status_code: int
    succeeded: bool
    fault_code: str | None
    fault_message: str | None
    duration_ms: float
    backend_ms: float | None
    overhead_ms: float
    client_server: str | None  # the client's gateway
    service_server: str | None  # the provider's gateway
    duration_bucket: int
    backend_bucket: int | None

    def row(self) -> tuple[Any, ...]:
        return _ROW(self)  # type: ignore[no-any-return]


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(OpRecord))
_ROW = attrgetter(*COLUMNS)  # dataclasses.astuple deep-copies: ~30 µs a record, this ~1 µs
MAX_FAULT_MESSAGE = 1000


def member_of(path: str) -> str:
    """``INST/CLASS/CODE`` of a client, service or member path ("" when it has fewer parts)."""
    parts = path.split("/")
    return "/".join(parts[:3]) if len(parts) >= 3 else ""


def unversioned(service: str) -> str:
    """A service path without its version (INST/CLASS/CODE/SUB/code[/version] -> INST/CLASS/CODE/SUB/code)."""
    parts = service.split("/")
    return "/".join(parts[:5]) if len(parts) == 6 else service


@lru_cache(maxsize=4096)
def _parties(client: str, service: str) -> tuple[str, str, str]:
    """(client member, service without version, provider member): the same few pairs recur in every record, and
    splitting them anew each time cost a third of building one."""
    return member_of(client), unversioned(service), member_of(service)


def is_operational_query(service: str) -> bool:
    """Queries of the operational data are not themselves recorded, so polling does not drown the traffic shown."""
    return service.split("/")[4:5] == [SERVICE_CODE]


def build(*, side: str, started_ms: int, total_s: float, waited_s: float, wait_ended_ms: int | None,
          manifest: Any | None, fallback_client: str, fallback_service: str, protocol: str,
          status: int, fault_code: str, fault_message: str | None, request_bytes: int, response_bytes: int,
          own_server: str, peer_server: str | None) -> OpRecord:
    """One record from an exchange's measurements. ``manifest`` is the signed request manifest when the exchange
    got that far (else the ids are unknown and the labels parsed so far stand in for client and service)."""
    if manifest is not None:
        client, service = manifest.client, manifest.service
        xroad_id, request_id = manifest.xroad_id, manifest.request_id
        user_id, issue, traceparent = manifest.user_id, manifest.issue, manifest.traceparent
        protocol = manifest.protocol
        protocol_version = manifest.protocol_version
        rest_method = manifest.method if protocol == "rest" else None
        rest_path = (manifest.path or "/") if protocol == "rest" else None
    else:
        client, service = fallback_client, fallback_service
        xroad_id = request_id = ""
        user_id = issue = traceparent = protocol_version = rest_method = rest_path = None
    duration_ms = total_s * 1000
    waited = waited_s > 0 or wait_ended_ms is not None
    backend_ms = waited_s * 1000 if waited else None
    response_out_ms = started_ms + round(duration_ms)
    request_out_ms = response_in_ms = None
    if wait_ended_ms is not None:
        response_in_ms = wait_ended_ms
        request_out_ms = wait_ended_ms - round(waited_s * 1000)
    succeeded = not fault_code and status < 500
    client_member, service_key, provider_member = _parties(client, service)
    client_server, service_server = (own_server, peer_server) if side == "client" else (peer_server, own_server)
    return OpRecord(
        side=side, request_in_ms=started_ms, request_out_ms=request_out_ms, response_in_ms=response_in_ms,
        response_out_ms=response_out_ms, xroad_id=xroad_id, request_id=request_id, user_id=user_id, issue=issue,
        traceparent=traceparent, trace_id=trace_id_of(traceparent), client=client, client_member=client_member,
        service=service, service_key=service_key, provider_member=provider_member, protocol=protocol,
        protocol_version=protocol_version, rest_method=rest_method, rest_path=rest_path,
        request_size=request_bytes, response_size=response_bytes, status_code=status, succeeded=succeeded,
        fault_code=fault_code or None, fault_message=(fault_message or "")[:MAX_FAULT_MESSAGE] or None,
        duration_ms=round(duration_ms, 3), backend_ms=round(backend_ms, 3) if backend_ms is not None else None,
        overhead_ms=round(max(duration_ms - (backend_ms or 0.0), 0.0), 3), client_server=client_server,
        service_server=service_server, duration_bucket=opstats.bucket_of(duration_ms),
        backend_bucket=opstats.bucket_of(backend_ms) if backend_ms is not None else None,
    )
