"""Aggregates merged across gateways: traffic matrix, per-service error rates and latency percentiles, series."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.monitoring import opstats

TOP = 5


@dataclass
class _Cell:
    count: int = 0
    failed: int = 0
    hist: dict[int, int] = field(default_factory=dict)
    backend: dict[int, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)

    def add(self, count: int, failed: int, hist: Sequence[Any], faults: Sequence[Any] = ()) -> None:
        """Add a packed row: counts, a flat [bucket, n, ...] histogram and a flat [fault, n, ...] list."""
        self.count += count
        self.failed += failed
        _add_flat(self.hist, hist)
        _add_flat(self.faults, faults)

    def summary(self) -> dict[str, Any]:
        p50, p95, p99 = opstats.percentiles(self.hist)
        out: dict[str, Any] = {"count": self.count, "failed": self.failed,
                               "error_rate": opstats.error_rate(self.count, self.failed),
                               "p50_ms": p50, "p95_ms": p95, "p99_ms": p99}
        if self.backend:
            b50, b95, _ = opstats.percentiles(self.backend)
            out["backend_p50_ms"], out["backend_p95_ms"] = b50, b95
        if self.faults:
            out["top_fault"] = max(self.faults.items(), key=lambda kv: kv[1])[0]
        return out


def merge(payloads: Iterable[Mapping[str, Any]], *, from_ms: int, to_ms: int, bucket_ms: int,
          names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Merge the gateways' raw aggregates. Transactions are counted once, on their client side (where every
    transaction enters the federation, with its end-to-end duration); the provider side adds backend latency."""
    names = names or {}
    totals = _Cell()
    pairs: dict[tuple[str, str], _Cell] = {}
    services: dict[str, _Cell] = {}
    owners: dict[str, str] = {}
    slots = max(1, -(-(to_ms - from_ms) // bucket_ms))
    series = [_Cell() for _ in range(slots)]
    for payload in payloads:
        for cm, pm, service, count, failed, hist, fault_list in payload.get("traffic") or []:
            totals.add(count, failed, hist, fault_list)
            pairs.setdefault((cm, pm), _Cell()).add(count, failed, hist, fault_list)
            services.setdefault(service, _Cell()).add(count, failed, hist, fault_list)
            owners[service] = pm
        for service, _count, hist in payload.get("backend") or []:
            _add_flat(services.setdefault(service, _Cell()).backend, hist)
            owners.setdefault(service, "/".join(service.split("/")[:3]))
        # Gateways bucket from the same from_ms with the same width, so slots line up.
        for t, count, failed, hist in payload.get("series") or []:
            if 0 <= t < slots:
                series[t].add(count, failed, hist)
    faults = dict(totals.faults)
    pair_rows = [{"client_member": cm, "provider_member": pm, "client_name": names.get(cm, cm),
                  "provider_name": names.get(pm, pm), **cell.summary()}
                 for (cm, pm), cell in pairs.items()]
    pair_rows.sort(key=lambda r: (-r["count"], r["client_member"], r["provider_member"]))
    service_rows = [{"service": s, "provider_member": owners.get(s, ""), "provider_name": names.get(owners.get(s, ""),
                     owners.get(s, "")), **cell.summary()} for s, cell in services.items()]
    service_rows.sort(key=lambda r: (-r["count"], r["service"]))
    counted = [r for r in service_rows if r["count"] > 0]
    slowest = sorted((r for r in counted if r["p95_ms"] is not None), key=lambda r: -r["p95_ms"])[:TOP]
    failing = sorted((r for r in counted if r["failed"] > 0), key=lambda r: (-r["failed"], -r["error_rate"]))[:TOP]
    series_rows = []
    for i, cell in enumerate(series):
        p50, p95, p99 = opstats.percentiles(cell.hist)
        series_rows.append({"t_ms": from_ms + i * bucket_ms, "count": cell.count, "failed": cell.failed,
                            "error_rate": opstats.error_rate(cell.count, cell.failed),
                            "p50_ms": p50, "p95_ms": p95, "p99_ms": p99})
    members = sorted({m for pair in pairs for m in pair})
    return {
        "range": {"from_ms": from_ms, "to_ms": to_ms, "bucket_ms": bucket_ms},
        "totals": totals.summary(),
        "pairs": pair_rows,
        "matrix": {"members": [{"member": m, "name": names.get(m, m)} for m in members],
                   "counts": [[pairs[(c, p)].count if (c, p) in pairs else 0 for p in members] for c in members],
                   "failed": [[pairs[(c, p)].failed if (c, p) in pairs else 0 for p in members] for c in members]},
        "services": service_rows,
        "slowest": slowest,
        "most_failing": failing,
        "faults": [{"fault_code": f, "count": n} for f, n in sorted(faults.items(), key=lambda kv: -kv[1])],
        "series": series_rows,
    }


def _add_flat(target: dict[Any, int], flat: Sequence[Any]) -> None:
    for i in range(0, len(flat) - 1, 2):
        key = flat[i]
        target[key] = target.get(key, 0) + flat[i + 1]
