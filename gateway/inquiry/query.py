"""The inquiry API's parameters validated into gateway queries, with X-Road-style errors that name the parameter."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.core import identifiers as ids
from gateway.monitoring.opquery import OpQuery
from gateway.monitoring.tracecontext import is_trace_id

INVALID = "Client.InvalidRequest"
MAX_PAGE = 200
DEFAULT_PAGE = 50
MAX_RANGE_MS = 31 * 24 * 3600 * 1000
_DURATION = re.compile(r"^(\d{1,6})(s|m|h|d)$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_KNOWN = {
    "transaction": {"xroad_id", "trace_id"},
    "transactions": {"from", "to", "last", "client", "provider", "service", "status", "limit", "cursor"},
    "aggregates": {"from", "to", "last", "client", "provider", "service", "buckets"},
    "gateways": set(),
}


class InquiryError(ValueError):
    """A bad request to the inquiry API; ``type`` is the X-Road-style fault code returned with it."""

    def __init__(self, message: str, type_: str = INVALID, status: int = 400) -> None:
        super().__init__(message)
        self.type = type_
        self.status = status


@dataclass(frozen=True, slots=True)
class Lookup:
    xroad_id: str | None
    trace_id: str | None

    def op_query(self) -> OpQuery:
        if self.xroad_id is not None:
            return OpQuery(kind="records", xroad_ids=(self.xroad_id,), limit=100)
        return OpQuery(kind="records", trace_id=self.trace_id, limit=100)


@dataclass(frozen=True, slots=True)
class Listing:
    query: OpQuery  # client-side records: every transaction has one, with its end-to-end outcome


@dataclass(frozen=True, slots=True)
class Aggregation:
    query: OpQuery


def _check_known(endpoint: str, params: Mapping[str, str]) -> None:
    unknown = sorted(set(params) - _KNOWN[endpoint])
    if unknown:
        raise InquiryError(f"unknown parameter {unknown[0]!r}; {endpoint} takes "
                           f"{', '.join(sorted(_KNOWN[endpoint])) or 'none'}")


def parse_time(name: str, text: str) -> int:
    """Unix milliseconds, or an ISO 8601 time (UTC unless it says otherwise)."""
    text = text.strip()
    if text.isdigit() and len(text) <= 15:
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InquiryError(f"{name}: {text[:40]!r} is neither Unix milliseconds nor an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def parse_duration(name: str, text: str) -> int:
    m = _DURATION.match(text.strip())
    if m is None:
        raise InquiryError(f"{name}: {text[:20]!r} is not a duration like 15m, 1h, 24h or 7d")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def time_range(params: Mapping[str, str], now_ms: int, default_ms: int) -> tuple[int, int]:
    if "last" in params and ("from" in params or "to" in params):
        raise InquiryError("give last, or from and to, not both")
    to_ms = parse_time("to", params["to"]) if "to" in params else now_ms
    if "last" in params:
        from_ms = to_ms - parse_duration("last", params["last"])
    else:
        from_ms = parse_time("from", params["from"]) if "from" in params else to_ms - default_ms
    if to_ms <= from_ms:
        raise InquiryError("to must be after from")
    if to_ms - from_ms > MAX_RANGE_MS:
        raise InquiryError("the time range may span at most 31 days")
    return from_ms, to_ms


def _party(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return ids.parse_client(value).path()
    except ids.IdentifierError as exc:
        raise InquiryError(f"{name}: {exc} (an agency is INST/CLASS/CODE, a subsystem INST/CLASS/CODE/SUB)") from None


def _service(params: Mapping[str, str]) -> str | None:
    value = params.get("service")
    if value is None or value == "":
        return None
    try:
        return ids.parse_service(value).unversioned().path()
    except ids.IdentifierError as exc:
        raise InquiryError(f"service: {exc}") from None


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise InquiryError(f"{name} must be a whole number from {low} to {high}")
    return int(text)


def encode_cursor(request_in_ms: int, xroad_id: str, request_id: str) -> str:
    raw = json.dumps([request_in_ms, xroad_id, request_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, str, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InquiryError("cursor is not one this service handed out") from None
    if (not isinstance(value, list) or len(value) != 3 or not isinstance(value[0], int)
            or not all(isinstance(v, str) for v in value[1:])):
        raise InquiryError("cursor is not one this service handed out")
    return value[0], value[1], value[2]


def lookup(params: Mapping[str, str]) -> Lookup:
    _check_known("transaction", params)
    xroad_id, trace_id = params.get("xroad_id") or None, params.get("trace_id") or None
    if (xroad_id is None) == (trace_id is None):
        raise InquiryError("give exactly one of xroad_id or trace_id")
    if xroad_id is not None and len(xroad_id) > 255:
        raise InquiryError("xroad_id is longer than 255 characters")
    if trace_id is not None:
        trace_id = trace_id.strip().lower()
        if not is_trace_id(trace_id):
            raise InquiryError("trace_id must be the 32 hex digits of a W3C trace id (not all zero)")
    return Lookup(xroad_id, trace_id)


def listing(params: Mapping[str, str], now_ms: int) -> Listing:
    _check_known("transactions", params)
    from_ms, to_ms = time_range(params, now_ms, 3_600_000)
    status = params.get("status", "any")
    if status not in ("any", "ok", "failed"):
        raise InquiryError("status must be any, ok or failed")
    before = decode_cursor(params["cursor"]) if params.get("cursor") else None
    return Listing(OpQuery(kind="records", side="client", from_ms=from_ms, to_ms=to_ms,
                           client=_party(params, "client"), provider=_party(params, "provider"),
                           service=_service(params), status=status,  # type: ignore[arg-type]
                           limit=_int(params, "limit", DEFAULT_PAGE, 1, MAX_PAGE), before=before))


def aggregation(params: Mapping[str, str], now_ms: int) -> Aggregation:
    _check_known("aggregates", params)
    from_ms, to_ms = time_range(params, now_ms, 3_600_000)
    buckets = _int(params, "buckets", 60, 1, 500)
    bucket_ms = max(1000, math.ceil((to_ms - from_ms) / buckets / 1000) * 1000)
    return Aggregation(OpQuery(kind="aggregate", from_ms=from_ms, to_ms=to_ms, client=_party(params, "client"),
                               provider=_party(params, "provider"), service=_service(params), bucket_ms=bucket_ms))


def no_params(endpoint: str, params: Mapping[str, str]) -> None:
    _check_known(endpoint, params)
