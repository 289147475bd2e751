"""Queries of a gateway's operational records: validated from JSON, scoped to what the asker may see, as SQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from gateway.core import identifiers as ids
from gateway.monitoring.oprecords import member_of
from gateway.monitoring.tracecontext import is_trace_id

Kind = Literal["records", "aggregate", "health"]
MAX_LIMIT = 1000
MAX_IDS = 500
MAX_RANGE_MS = 400 * 24 * 3600 * 1000  # longer than any retention window
MIN_BUCKET_MS = 1000
MAX_SERIES_BUCKETS = 1000
_FIELDS = frozenset({"kind", "from_ms", "to_ms", "xroad_ids", "trace_id", "client", "provider", "service", "side",
                     "status", "limit", "before", "bucket_ms"})


class QueryError(ValueError):
    """A query that cannot be run; the message names the field and what is wrong with it."""


class Denied(PermissionError):
    """A query for records the asker may not see."""


@dataclass(frozen=True, slots=True)
class OpQuery:
    kind: Kind = "records"
    from_ms: int = 0
    to_ms: int = 2**62
    xroad_ids: tuple[str, ...] = ()
    trace_id: str | None = None
    client: str | None = None  # member (3 parts) or subsystem (4 parts) path
    provider: str | None = None  # member or subsystem path of the service's owner
    service: str | None = None  # unversioned service path
    side: Literal["client", "provider"] | None = None
    status: Literal["any", "ok", "failed"] = "any"
    limit: int = 100
    before: tuple[int, str, str] | None = None  # keyset cursor: (request_in_ms, xroad_id, request_id), exclusive
    bucket_ms: int = 60_000

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "from_ms": self.from_ms, "to_ms": self.to_ms}
        for name in ("trace_id", "client", "provider", "service", "side"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.xroad_ids:
            out["xroad_ids"] = list(self.xroad_ids)
        if self.status != "any":
            out["status"] = self.status
        if self.kind == "records":
            out["limit"] = self.limit
        if self.before is not None:
            out["before"] = list(self.before)
        if self.kind == "aggregate":
            out["bucket_ms"] = self.bucket_ms
        return out


def _int(data: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise QueryError(f"{name} must be an integer from {low} to {high}")
    return value


def _path(data: dict[str, Any], name: str, parser: Callable[[str], object]) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise QueryError(f"{name} must be a string")
    try:
        parser(value)
    except ids.IdentifierError as exc:
        raise QueryError(f"{name}: {exc}") from None
    return value


def _party(text: str) -> object:
    """A member (INST/CLASS/CODE) or a subsystem (INST/CLASS/CODE/SUB)."""
    return ids.parse_client(text)


def parse(data: object) -> OpQuery:
    """Validate a query sent as JSON; QueryError names the first bad field."""
    if not isinstance(data, dict):
        raise QueryError("the query must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise QueryError(f"unknown field {unknown[0]}")
    kind = data.get("kind", "records")
    if kind not in ("records", "aggregate", "health"):
        raise QueryError("kind must be records, aggregate or health")
    from_ms = _int(data, "from_ms", 0, 0, 2**62)
    to_ms = _int(data, "to_ms", 2**62, 0, 2**62)
    if to_ms <= from_ms:
        raise QueryError("to_ms must be after from_ms")
    xroad_ids = data.get("xroad_ids", [])
    if (not isinstance(xroad_ids, list) or len(xroad_ids) > MAX_IDS
            or not all(isinstance(x, str) and 0 < len(x) <= 255 for x in xroad_ids)):
        raise QueryError(f"xroad_ids must be a list of at most {MAX_IDS} ids of 1 to 255 characters")
    trace_id = data.get("trace_id")
    if trace_id is not None and (not isinstance(trace_id, str) or not is_trace_id(trace_id)):
        raise QueryError("trace_id must be 32 lower-case hex digits, not all zero")
    side = data.get("side")
    if side not in (None, "client", "provider"):
        raise QueryError("side must be client or provider")
    status = data.get("status", "any")
    if status not in ("any", "ok", "failed"):
        raise QueryError("status must be any, ok or failed")
    service = _path(data, "service", ids.parse_service)
    if service is not None:
        service = ids.parse_service(service).unversioned().path()
    before = data.get("before")
    if before is not None:
        if (not isinstance(before, list) or len(before) != 3 or not isinstance(before[0], int)
                or isinstance(before[0], bool) or not all(isinstance(x, str) for x in before[1:])):
            raise QueryError("before must be [request_in_ms, xroad_id, request_id]")
        before = (before[0], before[1], before[2])
    bucket_ms = _int(data, "bucket_ms", 60_000, MIN_BUCKET_MS, MAX_RANGE_MS)
    if kind == "aggregate":
        if to_ms - from_ms > MAX_RANGE_MS:
            raise QueryError("an aggregate needs from_ms and to_ms at most 400 days apart")
        if (to_ms - from_ms) // bucket_ms > MAX_SERIES_BUCKETS:
            raise QueryError(f"bucket_ms is too small: at most {MAX_SERIES_BUCKETS} buckets per range")
    return OpQuery(kind=kind, from_ms=from_ms, to_ms=to_ms, xroad_ids=tuple(xroad_ids), trace_id=trace_id,
                   client=_path(data, "client", _party), provider=_path(data, "provider", _party), service=service,
                   side=side, status=status, limit=_int(data, "limit", 100, 1, MAX_LIMIT), before=before,
                   bucket_ms=bucket_ms)


# -- who may see what -------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Scope:
    """Everything, or only the records where ``member`` is the client's or the service's member."""

    everything: bool
    member: str | None = None
    reason: str = ""


def scope_for(asker: str, owner_member: str, monitoring_client: str | None) -> Scope:
    """X-Road's rule: the gateway's owner and the federation's monitoring client see every record; any other
    member sees its own transactions, as client or as provider."""
    asker_member = member_of(asker)
    if monitoring_client and (asker == monitoring_client or asker_member == monitoring_client):
        return Scope(True, reason="the federation's monitoring client")
    if asker_member == owner_member:
        return Scope(True, reason="the owner of this gateway")
    return Scope(False, asker_member, reason=f"member {asker_member}: its own transactions only")


def authorise(query: OpQuery, scope: Scope) -> None:
    """Refuse, with the reason, a query whose answer the scope cannot contain at all."""
    if scope.everything:
        return
    if query.kind == "health":
        raise Denied("only the gateway's owner and the federation's monitoring client may read its health")
    named = [member_of(p) for p in (query.client, query.provider) if p is not None]
    if query.service is not None and query.provider is None:
        named.append(member_of(query.service))
    narrowed = query.client is not None and (query.provider is not None or query.service is not None)
    if narrowed and scope.member not in named:
        raise Denied(f"{scope.member} may see only transactions where it is the client or the provider, "
                     f"not those between {' and '.join(dict.fromkeys(named))}")


# -- SQL ----------------------------------------------------------------------------------------------------------

class _Params:
    def __init__(self, style: str) -> None:
        self.style = style
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return "?" if self.style == "qmark" else f"${len(self.values)}"


def where(query: OpQuery, scope: Scope, style: str = "qmark", first: list[Any] | None = None,
          prefix: str = "", params: _Params | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause and its parameters. ``style`` is ``qmark`` (SQLite) or ``numeric`` (asyncpg, $n);
    ``first`` are parameters already placed before this clause (a gateway id), ``prefix`` conditions on them;
    ``params`` continues a statement whose earlier parameters are already placed."""
    p = params or _Params(style)
    p.values.extend(first or [])
    conds = [prefix] if prefix else []
    conds.append(f"request_in_ms >= {p.add(query.from_ms)}")
    conds.append(f"request_in_ms < {p.add(query.to_ms)}")
    if not scope.everything:
        conds.append(f"(client_member = {p.add(scope.member)} OR provider_member = {p.add(scope.member)})")
    if query.xroad_ids:
        conds.append(f"xroad_id IN ({', '.join(p.add(x) for x in query.xroad_ids)})")
    if query.trace_id is not None:
        conds.append(f"trace_id = {p.add(query.trace_id)}")
    if query.client is not None:
        column = "client_member" if query.client.count("/") == 2 else "client"
        conds.append(f"{column} = {p.add(query.client)}")
    if query.provider is not None:
        if query.provider.count("/") == 2:
            conds.append(f"provider_member = {p.add(query.provider)}")
        else:
            prefix_text = query.provider + "/"
            conds.append(f"substr(service_key, 1, {len(prefix_text)}) = {p.add(prefix_text)}")
    if query.service is not None:
        conds.append(f"service_key = {p.add(query.service)}")
    if query.side is not None:
        conds.append(f"side = {p.add(query.side)}")
    if query.status != "any":
        conds.append(f"succeeded = {p.add(query.status == 'ok')}")
    if query.before is not None:
        t, x, r = query.before
        c = _bytewise(style)
        conds.append(f"(request_in_ms, xroad_id{c}, request_id{c}) < ({p.add(t)}, {p.add(x)}, {p.add(r)})")
    return " AND ".join(conds), p.values


def _bytewise(style: str) -> str:
    """Ids compare byte by byte everywhere (as the inquiry merges pages in Python), not by a PostgreSQL locale."""
    return "" if style == "qmark" else ' COLLATE "C"'


def order(style: str) -> str:
    c = _bytewise(style)
    return f"ORDER BY request_in_ms DESC, xroad_id{c} DESC, request_id{c} DESC"


def records_sql(query: OpQuery, scope: Scope, columns: str, table: str, style: str = "qmark",
                first: list[Any] | None = None, prefix: str = "") -> tuple[str, list[Any]]:
    cond, params = where(query, scope, style, first, prefix)
    # One more than asked: whether there is a next page.
    return f"SELECT {columns} FROM {table} WHERE {cond} {order(style)} LIMIT {query.limit + 1}", params


def _hist(style: str) -> str:
    """The SQL aggregate that packs (bucket, n) rows into text like ``3:5,7:2``."""
    if style == "qmark":
        return "group_concat(b || ':' || n)"
    return "string_agg(b::text || ':' || n::text, ',')"


def aggregate_sql(query: OpQuery, scope: Scope, table: str, style: str = "qmark", first: list[Any] | None = None,
                  prefix: str = "") -> tuple[tuple[str, list[Any]], ...]:
    """Four statements, grouped and packed in the database (SQLite releases the GIL while it works), so a gateway
    sends one row per key, its histogram packed as ``bucket:count,...``:

    - traffic: client-side counts and end-to-end latency per (client member, provider member, service): every
      transaction is counted once, where it entered the federation;
    - faults: client-side failures per (client member, provider member, service, fault code);
    - backend: provider-side backend latency per service;
    - series: client-side counts and latency per time bucket."""
    hist = _hist(style)
    failed = "sum(CASE WHEN succeeded THEN 0 ELSE 1 END)"

    def statement(side: str, inner_select: str, inner_group: str, outer: str, extra: str = "",
                  leading: tuple[Any, ...] = ()) -> tuple[str, list[Any]]:
        p = _Params(style)
        p.values.extend(first or [])
        marks = [p.add(v) for v in leading]
        cond, _ = where(query, scope, style, None, prefix, params=p)
        inner = (f"SELECT {inner_select.format(*marks)} FROM {table} WHERE {cond} AND side = {p.add(side)}{extra} "
                 f"GROUP BY {inner_group}")
        return outer.format(inner=inner, hist=hist), p.values

    traffic = statement(
        "client", f"client_member AS cm, provider_member AS pm, service_key AS svc, duration_bucket AS b, "
        f"count(*) AS n, {failed} AS f", "1, 2, 3, 4",
        "SELECT cm, pm, svc, sum(n), sum(f), {hist} FROM ({inner}) AS g GROUP BY 1, 2, 3")
    faults = statement(
        "client", "client_member, provider_member, service_key, coalesce(fault_code, ''), count(*)", "1, 2, 3, 4",
        "{inner}", extra=" AND NOT succeeded")
    backend = statement(
        "provider", "service_key AS svc, backend_bucket AS b, count(*) AS n", "1, 2",
        "SELECT svc, sum(n), {hist} FROM ({inner}) AS g GROUP BY 1", extra=" AND backend_bucket IS NOT NULL")
    series = statement(
        "client", f"(request_in_ms - {{0}}) / {{1}} AS t, duration_bucket AS b, count(*) AS n, {failed} AS f",
        "1, 2", "SELECT t, sum(n), sum(f), {hist} FROM ({inner}) AS g GROUP BY 1 ORDER BY 1",
        leading=(query.from_ms, query.bucket_ms))
    return traffic, faults, backend, series
