"""Plain-text tables of the inquiry's answers for the terminal."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_text(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join([line.rstrip(), rule, *body])


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def coverage(answer: dict[str, Any]) -> str:
    rows = [(g["server"], g["status"], g.get("ms"), g.get("error", "")) for g in answer.get("gateways", [])]
    note = "all gateways answered" if answer.get("complete") else \
        f"NOT COMPLETE: no answer from {', '.join(answer.get('unanswered', []))}"
    return f"{note}\n" + table(["gateway", "status", "ms", "error"], rows)


def transaction(tx: dict[str, Any]) -> str:
    head = [f"X-Road-Id   {tx['xroad_id']}   request id {tx['request_id']}",
            f"{tx['client']} -> {tx['service']}   {tx['status'].upper()}"
            + (f"   {tx['fault_code']}: {tx['fault_message']}" if tx.get("fault_code") else ""),
            f"trace id    {tx.get('trace_id') or '-'}   user {tx.get('user_id') or '-'}   "
            f"started {when(tx['started_ms'])} UTC   {_text(tx.get('duration_ms'))} ms"]
    if tx.get("missing_sides"):
        head.append(f"missing side(s): {', '.join(tx['missing_sides'])}")
    events = table(["+ms", "side", "event", "gateway"],
                   [(e.get("offset_ms"), e["side"], e["event"], e.get("gateway")) for e in tx["timeline"]])
    bd = tx["breakdown"]
    parts = table(["client gateway ms", "network ms", "provider gateway ms", "backend ms", "total ms"],
                  [(bd["client_gateway_ms"], bd["network_ms"], bd["provider_gateway_ms"], bd["backend_ms"],
                    bd["total_ms"])])
    return "\n".join([*head, "", "timeline", events, "", "where the time went (largest: "
                      f"{bd.get('largest') or '-'})", parts])


def transactions(answer: dict[str, Any]) -> str:
    rows = [(when(t["started_ms"]), t["xroad_id"], t["client"], t["service"], t["status"], t.get("fault_code"),
             t.get("duration_ms"), "yes" if t["complete"] else "no") for t in answer["transactions"]]
    out = table(["started (UTC)", "X-Road-Id", "client", "service", "status", "fault", "ms", "both sides"], rows)
    if answer.get("next_cursor"):
        out += f"\nmore: --cursor {answer['next_cursor']}"
    return out


def aggregates(answer: dict[str, Any]) -> str:
    t = answer["totals"]
    head = (f"{t['count']} transactions, {t['failed']} failed ({t['error_rate'] * 100:.1f}%), "
            f"p50 {_text(t['p50_ms'])} ms, p95 {_text(t['p95_ms'])} ms, p99 {_text(t['p99_ms'])} ms")
    pairs = table(["client", "provider", "count", "failed", "error %", "p50", "p95", "p99"],
                  [(p["client_member"], p["provider_member"], p["count"], p["failed"], p["error_rate"] * 100,
                    p["p50_ms"], p["p95_ms"], p["p99_ms"]) for p in answer["pairs"]])
    services = table(["service", "count", "failed", "error %", "p50", "p95", "backend p95", "top fault"],
                     [(s["service"], s["count"], s["failed"], s["error_rate"] * 100, s["p50_ms"], s["p95_ms"],
                       s.get("backend_p95_ms"), s.get("top_fault")) for s in answer["services"]])
    return "\n".join([head, "", "per agency pair", pairs, "", "per service", services])


def gateways(answer: dict[str, Any]) -> str:
    now = answer["now_ms"]
    rows = []
    for g in answer["gateways"]:
        conf = g.get("globalconf") or {}
        certs = g.get("certificates") or []
        soonest = min((c["not_after_ms"] for c in certs), default=None)
        stamping = ((g.get("messagelog") or {}).get("timestamping") or {}).get("state")
        rows.append((g["server"], g["status"], conf.get("age_s"),
                     f"{(soonest - now) // 86_400_000} d" if soonest else None, stamping,
                     (g.get("opmon") or {}).get("pending"), g.get("error", "")))
    return table(["gateway", "status", "conf age s", "first cert expiry", "timestamping", "opmon queue", "error"],
                 rows)
