"""The federation service getSecurityServerOperationalData: a gateway answers signed queries of its operational
records, scoped to what the asking member may see."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from gateway.core import envelope
from gateway.core.faults import Code, Fault, Origin
from gateway.core.globalconf import GlobalConf
from gateway.monitoring import opquery
from gateway.monitoring.oprecords import COLUMNS, SERVICE_CODE
from gateway.monitoring.opstore import Aggregate

if TYPE_CHECKING:
    from gateway.proxy.runtime import GatewayRuntime

log = logging.getLogger("wasl.opmon")
FORMAT = "wasl-opmon/1"
_SUCCEEDED = COLUMNS.index("succeeded")
_JSON = [("content-type", "application/json")]


def service_of(protocol: str, service_code: str) -> str | None:
    """The operational-data service when a request asks for it (REST: POST a JSON query), else None."""
    return SERVICE_CODE if protocol == "rest" and service_code == SERVICE_CODE else None


def parse_request(manifest: envelope.RequestManifest, body: bytes) -> opquery.OpQuery:
    if manifest.method != "POST":
        raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, f"{SERVICE_CODE} takes a JSON query by POST, "
                    f"not {manifest.method}")
    try:
        data = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, f"{SERVICE_CODE}: the query is not valid JSON") from None
    try:
        return opquery.parse(data)
    except opquery.QueryError as exc:
        raise Fault(Origin.CLIENT, Code.INVALID_REQUEST, f"{SERVICE_CODE}: {exc}") from None


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


async def answer(rt: GatewayRuntime, conf: GlobalConf, client_path: str, manifest: envelope.RequestManifest,
                 body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Answer one query; the caller (ServerProxy) has verified the signature and logs and signs the answer."""
    query = parse_request(manifest, body)
    scope = opquery.scope_for(client_path, rt.server_id.owner.path(), conf.document.monitoring_client)
    try:
        opquery.authorise(query, scope)
    except opquery.Denied as exc:
        raise Fault(Origin.SERVER_PROXY, Code.ACCESS_DENIED, str(exc)) from None
    head: dict[str, Any] = {"format": FORMAT, "server": rt.server_path, "kind": query.kind, "scope": scope.reason,
                            "now_ms": int(time.time() * 1000)}
    if query.kind == "health":
        return 200, _JSON, _dump({**head, **await health(rt)})
    opmon = rt.opmon
    if opmon is None:
        raise Fault(Origin.SERVER_PROXY, Code.SERVICE_DISABLED, "operational monitoring is off at this gateway")
    await opmon.flush(0.5)  # this worker's queued records first, so a query sees the exchange just made
    if query.kind == "aggregate":
        agg: Aggregate = await opmon.store.aggregate(query, scope)
        return 200, _JSON, _dump({**head, "from_ms": query.from_ms, "bucket_ms": query.bucket_ms, **agg.packed()})
    rows = await opmon.store.records(query, scope)
    more = len(rows) > query.limit
    out = []
    for row in rows[:query.limit]:
        item = list(row)
        item[_SUCCEEDED] = bool(item[_SUCCEEDED])
        out.append(item)
    return 200, _JSON, _dump({**head, "columns": COLUMNS, "rows": out, "more": more})


async def health(rt: GatewayRuntime) -> dict[str, Any]:
    """What the dashboard shows of a gateway: configuration age, certificate expiry, message log and timestamping."""
    now = rt.now()
    conf = rt.conf.current
    out: dict[str, Any] = {}
    if conf is not None:
        doc = conf.document
        out["globalconf"] = {"serial": doc.serial, "generated_at_ms": int(doc.generated_at.timestamp() * 1000),
                             "expires_at_ms": int(doc.expires_at.timestamp() * 1000),
                             "age_s": round((now - doc.generated_at).total_seconds(), 1),
                             "expired": conf.is_expired(now), "last_error": rt.conf.last_error}
    certs = [{"kind": "auth", "member": rt.server_id.owner.path(),
              "not_after_ms": int(rt.auth_not_after.timestamp() * 1000)}]
    certs += [{"kind": "sign", "member": member, "not_after_ms": int(identity.not_after.timestamp() * 1000)}
              for member, identity in rt.signing.items()]
    out["certificates"] = certs
    mlog = rt.message_log
    writer = mlog.writer
    out["messagelog"] = {"enabled": mlog.enabled, "pending": writer.pending if writer is not None else 0,
                         "timestamping": _timestamping(mlog)}
    opmon = rt.opmon
    out["opmon"] = ({"enabled": True, "pending": opmon.pending, "written": opmon.written, "dropped": opmon.dropped,
                     "retention_s": opmon.retention_seconds} if opmon is not None else {"enabled": False})
    return out


def _timestamping(mlog: Any) -> dict[str, Any]:
    """The message log's timestamping state, where the message log has a timestamper."""
    stamper = getattr(mlog, "timestamper", None)
    if stamper is None:
        return {"state": "off"}
    try:
        state = stamper.state()
        health = stamper.health
        return {"state": getattr(state, "name", str(state)).lower(), "description": stamper.describe(),
                "backlog": health.backlog, "last_success_ms": health.last_success_ms}
    except Exception as exc:  # the timestamper is another component: report, never fail the health answer
        return {"state": "unknown", "description": f"{exc.__class__.__name__}"}
