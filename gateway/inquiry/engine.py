"""The inquiry's answers: one transaction, a page of transactions, aggregates and gateway health, from all gateways."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from gateway.core.globalconf import Gateway, GlobalConf
from gateway.inquiry import aggregate, join
from gateway.inquiry.fanout import Fanout, GatewayAnswer
from gateway.inquiry.query import Aggregation, Listing, Lookup, encode_cursor
from gateway.monitoring.opquery import OpQuery


def _report(answers: list[GatewayAnswer]) -> dict[str, Any]:
    """Which gateways answered: the answer never hides one that did not."""
    missing = [a.server for a in answers if a.status != "ok"]
    return {"gateways": [a.summary() for a in answers], "complete": not missing, "unanswered": missing}


class Inquiry:
    def __init__(self, fanout: Fanout, conf: Any) -> None:
        """``conf`` has ``current`` (the held GlobalConf, or None): the confclient.GlobalConfClient."""
        self.fanout = fanout
        self.conf = conf

    def _conf(self) -> GlobalConf:
        conf = self.conf.current
        if conf is None:
            raise LookupError("no global configuration yet: the inquiry does not know the gateways")
        return conf

    def gateways(self) -> list[Gateway]:
        return list(self._conf().document.gateways)

    def names(self) -> dict[str, str]:
        return dict(self._conf().member_names)

    async def transaction(self, lookup: Lookup) -> dict[str, Any]:
        """Every transaction with this X-Road id (callers choose it, so there may be several) or trace id."""
        answers = await self.fanout.ask_all(self.gateways(), lookup.op_query())
        records = [r for a in answers if a.payload for r in join.records_of(a.payload, a.server)]
        return {"query": {"xroad_id": lookup.xroad_id, "trace_id": lookup.trace_id},
                "transactions": join.join(records), **_report(answers)}

    async def transactions(self, listing: Listing) -> dict[str, Any]:
        """A page of transactions, newest first, anchored on their client sides; their provider sides are then
        fetched from exactly the gateways that served them."""
        query = listing.query
        gateways = self.gateways()
        answers = await self.fanout.ask_all(gateways, query)
        pages = [join.records_of(a.payload, a.server) for a in answers if a.payload]
        page, more = join.merge_pages(pages, query.limit)
        more = more or any(a.payload.get("more") for a in answers if a.payload)
        by_server: dict[str, list[str]] = defaultdict(list)
        for record in page:
            if record.get("service_server") and record.get("xroad_id"):
                by_server[record["service_server"]].append(record["xroad_id"])
        known = {gw.server: gw for gw in gateways}
        lookups = [(known[server], OpQuery(kind="records", side="provider", xroad_ids=tuple(dict.fromkeys(ids)),
                                           limit=min(1000, 2 * len(ids))))
                   for server, ids in by_server.items() if server in known]
        provider_answers = await self.fanout.ask_each(lookups)
        wanted = {(r.get("xroad_id"), r.get("request_id")) for r in page}
        providers = [r for a in provider_answers if a.payload for r in join.records_of(a.payload, a.server)
                     if (r.get("xroad_id"), r.get("request_id")) in wanted]
        txs = join.join(page + providers)
        last = page[-1] if page else None
        cursor = encode_cursor(last["request_in_ms"], last["xroad_id"], last["request_id"]) if more and last else None
        report = _report(answers)
        report["provider_lookups"] = [a.summary() for a in provider_answers]
        report["complete"] = report["complete"] and all(a.status == "ok" for a in provider_answers)
        return {"query": {**query.to_json(), "before": None}, "transactions": txs, "next_cursor": cursor,
                "names": self.names(), **report}

    async def aggregates(self, aggregation: Aggregation) -> dict[str, Any]:
        query = aggregation.query
        answers = await self.fanout.ask_all(self.gateways(), query)
        merged = aggregate.merge([a.payload for a in answers if a.payload], from_ms=query.from_ms,
                                 to_ms=query.to_ms, bucket_ms=query.bucket_ms, names=self.names())
        return {"query": query.to_json(), **merged, **_report(answers)}

    async def health(self) -> dict[str, Any]:
        conf = self._conf()
        started = time.time()
        answers = await self.fanout.ask_all(self.gateways(), OpQuery(kind="health"))
        by_server = {a.server: a for a in answers}
        rows = []
        for gw in conf.document.gateways:
            answer = by_server[gw.server]
            row: dict[str, Any] = {"server": gw.server, "address": gw.address, "clients": gw.clients,
                                   **answer.summary()}
            if answer.payload:
                row.update({k: answer.payload.get(k) for k in ("globalconf", "certificates", "messagelog", "opmon")})
            rows.append(row)
        doc = conf.document
        return {"now_ms": int(started * 1000), "instance": doc.instance,
                "globalconf": {"serial": doc.serial, "expires_at_ms": int(doc.expires_at.timestamp() * 1000),
                               "generated_at_ms": int(doc.generated_at.timestamp() * 1000)},
                "monitoring_client": doc.monitoring_client, "asking_as": self.fanout.client,
                **{**_report(answers), "gateways": rows}}
