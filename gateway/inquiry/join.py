"""Both sides of each transaction joined into one view: the summary, the timeline and where the time went."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Record = dict[str, Any]

# The eight moments of a relayed exchange, in the order they happen.
_EVENTS = (
    ("client", "request_in_ms", "request_in", "the caller's request reached the client's gateway"),
    ("client", "request_out_ms", "request_out", "signed and sent to the provider's gateway"),
    ("provider", "request_in_ms", "request_in", "the provider's gateway received it"),
    ("provider", "request_out_ms", "request_out", "verified and sent to the backend service"),
    ("provider", "response_in_ms", "response_in", "the backend service answered"),
    ("provider", "response_out_ms", "response_out", "signed and sent back"),
    ("client", "response_in_ms", "response_in", "the client's gateway received the answer"),
    ("client", "response_out_ms", "response_out", "verified and returned to the caller"),
)


def records_of(payload: dict[str, Any], gateway: str) -> list[Record]:
    """A gateway's answer (columns and rows) as records, each tagged with the gateway that holds it."""
    columns = payload.get("columns") or []
    out = []
    for row in payload.get("rows") or []:
        record = dict(zip(columns, row, strict=False))
        record["gateway"] = gateway
        out.append(record)
    return out


def key_of(record: Record, index: int) -> tuple[str, str]:
    """Records of one transaction share the X-Road id and the request id the client's gateway drew; a record
    without a request id (refused before it was relayed) is a transaction of its own."""
    if record.get("request_id"):
        return record.get("xroad_id") or "", record["request_id"]
    return record.get("xroad_id") or "", f"#{record.get('gateway')}#{record.get('request_in_ms')}#{index}"


def join(records: Iterable[Record]) -> list[dict[str, Any]]:
    """Pair client-side and provider-side records into transactions, newest first."""
    pairs: dict[tuple[str, str], dict[str, Record]] = {}
    for index, record in enumerate(records):
        sides = pairs.setdefault(key_of(record, index), {})
        sides.setdefault(record.get("side", "client"), record)  # a duplicate of a side adds nothing
    txs = [describe(s.get("client"), s.get("provider")) for s in pairs.values()]
    txs.sort(key=lambda t: (t["started_ms"], t["xroad_id"], t["request_id"]), reverse=True)
    return txs


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def describe(client: Record | None, provider: Record | None) -> dict[str, Any]:
    """One transaction: what it was, how it ended, its timeline and the breakdown of its duration."""
    if client is None and provider is None:
        raise ValueError("a transaction needs at least one side")
    a, b = client or {}, provider or {}
    failed_side = next((s for s, r in (("provider", provider), ("client", client)) if r and r.get("fault_code")),
                       None)
    fault_record = (provider if failed_side == "provider" else client) if failed_side else None
    succeeded = all(r.get("succeeded", True) for r in (client, provider) if r is not None)
    missing = []
    if client is None:
        missing.append("client")
    if provider is None and client is not None and client.get("service_server"):
        missing.append("provider")
    return {
        "xroad_id": _first(a.get("xroad_id"), b.get("xroad_id")) or "",
        "request_id": _first(a.get("request_id"), b.get("request_id")) or "",
        "trace_id": _first(a.get("trace_id"), b.get("trace_id")),
        "traceparent": _first(a.get("traceparent"), b.get("traceparent")),
        "client": _first(a.get("client"), b.get("client")),
        "service": _first(a.get("service"), b.get("service")),
        "client_member": _first(a.get("client_member"), b.get("client_member")),
        "provider_member": _first(a.get("provider_member"), b.get("provider_member")),
        "protocol": _first(a.get("protocol"), b.get("protocol")),
        "rest_method": _first(a.get("rest_method"), b.get("rest_method")),
        "rest_path": _first(a.get("rest_path"), b.get("rest_path")),
        "user_id": _first(a.get("user_id"), b.get("user_id")),
        "issue": _first(a.get("issue"), b.get("issue")),
        "client_server": _first(a.get("client_server"), b.get("client_server")),
        "service_server": _first(a.get("service_server"), b.get("service_server")),
        "started_ms": _first(a.get("request_in_ms"), b.get("request_in_ms")) or 0,
        "status": "ok" if succeeded else "failed",
        "status_code": _first(a.get("status_code"), b.get("status_code")),
        "fault_code": fault_record.get("fault_code") if fault_record else None,
        "fault_message": fault_record.get("fault_message") if fault_record else None,
        "fault_side": failed_side,
        "duration_ms": _first(a.get("duration_ms"), b.get("duration_ms")),
        "request_size": _first(a.get("request_size"), b.get("request_size")),
        "response_size": _first(a.get("response_size"), b.get("response_size")),
        "complete": not missing,
        "missing_sides": missing,
        "timeline": timeline(client, provider),
        "breakdown": breakdown(client, provider),
        "sides": {"client": client, "provider": provider},
    }


def timeline(client: Record | None, provider: Record | None) -> list[dict[str, Any]]:
    """The recorded moments in the order they happen, each with its offset from the first. The two gateways'
    clocks may differ a little; the order shown is the exchange's own, not a sort by clock."""
    sides = {"client": client, "provider": provider}
    events = []
    for side, column, name, text in _EVENTS:
        record = sides[side]
        if record is None or record.get(column) is None:
            continue
        events.append({"side": side, "event": name, "at_ms": record[column], "gateway": record.get("gateway"),
                       "what": text})
    if events:
        start = events[0]["at_ms"]
        for event in events:
            event["offset_ms"] = event["at_ms"] - start
    return events


def breakdown(client: Record | None, provider: Record | None) -> dict[str, Any]:
    """Where the time went, from durations each gateway measured on its own clock (immune to clock skew):
    the client's gateway, the network and TLS between the gateways, the provider's gateway, the backend."""
    parts: dict[str, float | None] = {"client_gateway_ms": None, "network_ms": None, "provider_gateway_ms": None,
                                      "backend_ms": None}
    total = None
    if client is not None:
        parts["client_gateway_ms"] = client.get("overhead_ms")
        total = client.get("duration_ms")
    if provider is not None:
        parts["provider_gateway_ms"] = provider.get("overhead_ms")
        parts["backend_ms"] = provider.get("backend_ms")
        total = total if total is not None else provider.get("duration_ms")
    if client is not None and provider is not None and client.get("backend_ms") is not None:
        parts["network_ms"] = round(max(0.0, client["backend_ms"] - (provider.get("duration_ms") or 0.0)), 3)
    known = {k: v for k, v in parts.items() if v is not None}
    largest = max(known, key=lambda k: known[k]) if known else None
    return {**parts, "total_ms": total, "largest": largest.removesuffix("_ms") if largest else None}


def merge_pages(pages: Sequence[Sequence[Record]], limit: int) -> tuple[list[Record], bool]:
    """Newest ``limit`` client-side records across gateways (each page is newest first); and whether more exist."""
    merged = [r for page in pages for r in page]
    merged.sort(key=lambda r: (r.get("request_in_ms") or 0, r.get("xroad_id") or "", r.get("request_id") or ""),
                reverse=True)
    return merged[:limit], len(merged) > limit
