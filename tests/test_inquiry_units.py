"""The inquiry's pure parts: joining sides, where time went, merging aggregates, parameters and tables."""

from __future__ import annotations

import pytest

from gateway.inquiry import aggregate, join, query, tables


def side(kind: str, xroad_id: str = "x", request_id: str = "r", **extra: object) -> dict:
    base = {"side": kind, "xroad_id": xroad_id, "request_id": request_id, "client": "I/C/1/a", "service": "I/C/2/b/s",
            "request_in_ms": 1000, "request_out_ms": 1002, "response_in_ms": 1030, "response_out_ms": 1033,
            "duration_ms": 33.0, "backend_ms": 28.0, "overhead_ms": 5.0, "succeeded": True, "fault_code": None,
            "gateway": f"gw-{kind}", "service_server": "gw-provider", "trace_id": "t" * 32}
    if kind == "provider":
        base.update(request_in_ms=1005, request_out_ms=1008, response_in_ms=1024, response_out_ms=1026,
                    duration_ms=21.0, backend_ms=16.0, overhead_ms=5.0)
    base.update(extra)
    return base


def test_join_pairs_by_xroad_id_and_request_id() -> None:
    records = [side("client"), side("provider"), side("client", request_id="r2", request_in_ms=2000),
               side("client", xroad_id="", request_id="", request_in_ms=500, service_server=None)]
    txs = join.join(records)
    assert [(t["request_id"], t["complete"]) for t in txs] == [("r2", False), ("r", True), ("", True)]
    assert txs[0]["missing_sides"] == ["provider"]  # it was relayed, so a provider side should exist
    full = txs[1]
    assert [e["offset_ms"] for e in full["timeline"]] == [0, 2, 5, 8, 24, 26, 30, 33]
    assert full["breakdown"] == {"client_gateway_ms": 5.0, "network_ms": 7.0, "provider_gateway_ms": 5.0,
                                 "backend_ms": 16.0, "total_ms": 33.0, "largest": "backend"}


def test_the_provider_fault_is_the_one_shown() -> None:
    tx = join.describe(side("client", succeeded=False, fault_code="Server.ServerProxy.ServiceFailed"),
                       side("provider", succeeded=False, fault_code="Server.ServerProxy.ServiceFailed",
                            fault_message="backend said no"))
    assert (tx["status"], tx["fault_side"], tx["fault_message"]) == ("failed", "provider", "backend said no")
    only_provider = join.describe(None, side("provider"))
    assert only_provider["missing_sides"] == ["client"] and only_provider["breakdown"]["network_ms"] is None


def test_merge_pages_keeps_the_newest() -> None:
    pages = [[{"request_in_ms": t, "xroad_id": f"a{t}", "request_id": "r"} for t in (9, 5, 1)],
             [{"request_in_ms": t, "xroad_id": f"b{t}", "request_id": "r"} for t in (8, 7)]]
    page, more = join.merge_pages(pages, 3)
    assert [r["xroad_id"] for r in page] == ["a9", "b8", "b7"] and more


def test_aggregate_merge_counts_once_and_reads_percentiles() -> None:
    one = {"traffic": [["I/C/1", "I/C/2", "I/C/2/b/s", 10, 1, [40, 9, 60, 1], ["Server.X.Y", 1]]],
           "backend": [["I/C/2/b/s", 10, [30, 10]]], "series": [[0, 10, 1, [40, 9, 60, 1]]]}
    two = {"traffic": [["I/C/3", "I/C/2", "I/C/2/b/s", 5, 0, [40, 5], []]], "backend": [],
           "series": [[1, 5, 0, [40, 5]]]}
    out = aggregate.merge([one, two], from_ms=0, to_ms=120_000, bucket_ms=60_000, names={"I/C/2": "Two"})
    assert out["totals"]["count"] == 15 and out["totals"]["failed"] == 1
    [svc] = out["services"]
    assert svc["count"] == 15 and svc["provider_name"] == "Two" and svc["top_fault"] == "Server.X.Y"
    assert svc["backend_p50_ms"] is not None and svc["p99_ms"] > svc["p50_ms"]
    assert [p["count"] for p in out["series"]] == [10, 5]
    assert out["faults"] == [{"fault_code": "Server.X.Y", "count": 1}]
    assert out["most_failing"][0]["service"] == "I/C/2/b/s"
    members = [m["member"] for m in out["matrix"]["members"]]
    assert out["matrix"]["counts"][members.index("I/C/1")][members.index("I/C/2")] == 10


def test_parameters_are_validated_with_clear_errors() -> None:
    now = 10_000_000_000
    listing = query.listing({"last": "15m", "client": "DEMO/GOV/1003", "status": "failed", "limit": "5"}, now)
    assert listing.query.from_ms == now - 900_000 and listing.query.side == "client" and listing.query.limit == 5
    cursor = query.encode_cursor(123, "x", "r")
    assert query.listing({"cursor": cursor}, now).query.before == (123, "x", "r")
    assert query.aggregation({"from": "2025-01-01T00:00:00Z", "to": "2025-01-02T00:00:00Z", "buckets": "24"},
                             now).query.bucket_ms == 3_600_000
    assert query.lookup({"trace_id": "4BF92F3577B34DA6A3CE929D0E0E4736"}).trace_id == \
        "4bf92f3577b34da6a3ce929d0e0e4736"
    for fn, params, words in ((query.listing, {"limit": "0"}, "limit"), (query.listing, {"last": "1y"}, "duration"),
                              (query.listing, {"from": "2", "to": "1"}, "after"),
                              (query.aggregation, {"last": "40d"}, "31 days"),
                              (query.listing, {"service": "DEMO/GOV"}, "service")):
        with pytest.raises(query.InquiryError, match=words):
            fn(params, now)


def test_tables_render() -> None:
    text = tables.table(["a", "bb"], [(1, None), ("long value", 2.25)])
    assert text.splitlines()[0] == "a           bb" and "2.2" in text and "-" in text
