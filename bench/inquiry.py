"""Benchmark the unified inquiry: 20 gateways whose operational stores hold 100,000 transactions (both sides), asked
through signed messages by the inquiry service, all on this machine.

    python bench/inquiry.py [--gateways 20] [--transactions 100000] [--lookups 40] [--aggregates 3]

The federation (registry, every gateway, the inquiry service) runs in this one process on one event loop, so each
lookup pays for every hop on a single core: inquiry -> the monitoring client's gateway -> 20 signed requests over
pinned mutual TLS -> 20 provider gateways (signature checks, message log, the store query) -> 20 signed answers.
The records are generated (spread over the last 24 h, log-normal latencies, ~3% faults) and written straight into
each gateway's store before the gateways start. Targets (issue 5): lookup by X-Road id p50 < 200 ms; an aggregate
over 24 h < 2 s. The last line is ``inquiry_lookup_p50_ms=<float> inquiry_aggregate_ms=<float>``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web

from gateway.configfile import load_model
from gateway.core import envelope
from gateway.core.settings import GatewaySettings
from gateway.demo import federation as fed
from gateway.inquiry import service as inquiry_service
from gateway.inquiry.config import InquirySettings
from gateway.inquiry.setup import enable_monitoring, write_settings
from gateway.monitoring import oprecords
from gateway.monitoring.opstore_sqlite import SqliteOpStore
from gateway.proxy.app import RunningGateway
from gateway.registry.server import Registry

DAY_MS = 86_400_000
FAULTS = ("Server.ServerProxy.ServiceFailed", "Server.ServerProxy.ServiceTimeout", "Server.ServerProxy.AccessDenied")


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def agencies(n: int) -> tuple[fed.Agency, ...]:
    return tuple(fed.Agency(f"a{i:02d}", "GOV", f"{2000 + i}", f"Agency {i}", "main", f"gw-{i:02d}")
                 for i in range(n))


def generate(agencies_: tuple[fed.Agency, ...], transactions: int, now_ms: int,
             rng: random.Random) -> tuple[dict[str, list[oprecords.OpRecord]], list[str]]:
    """Both sides of every transaction, grouped by the gateway that would have recorded them."""
    by_gateway: dict[str, list[oprecords.OpRecord]] = {a.server.path(): [] for a in agencies_}
    xroad_ids = []
    for i in range(transactions):
        client, provider = rng.sample(agencies_, 2)
        service = f"{provider.subsystem_id.path()}/service{rng.randrange(3)}"
        xroad_id = f"bench-{i:06d}-{rng.getrandbits(32):08x}"
        xroad_ids.append(xroad_id)
        manifest = envelope.RequestManifest(
            protocol="rest", xroad_id=xroad_id, request_id=f"req-{i:06d}", client=client.subsystem_id.path(),
            service=service, method="GET", path="/items/1", query="", headers=(), body_sha512="", body_length=0,
            created_ms=0, user_id="bench", traceparent=f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01")
        start = now_ms - rng.randrange(DAY_MS - 60_000)
        backend_s = rng.lognormvariate(-4.0, 0.8)  # ~18 ms median
        failed = rng.random() < 0.03
        fault = rng.choice(FAULTS) if failed else ""
        common = {"manifest": manifest, "fallback_client": "", "fallback_service": "", "protocol": "rest",
                  "status": 502 if failed else 200, "fault_code": fault, "fault_message": "bench" if failed else None,
                  "request_bytes": 300, "response_bytes": 1200 + rng.randrange(4000)}
        provider_s = backend_s + 0.002
        by_gateway[provider.server.path()].append(oprecords.build(
            side="provider", started_ms=start + 3, total_s=provider_s, waited_s=backend_s,
            wait_ended_ms=start + 3 + round((provider_s - 0.001) * 1000), own_server=provider.server.path(),
            peer_server=client.server.path(), **common))
        client_s = provider_s + 0.005
        by_gateway[client.server.path()].append(oprecords.build(
            side="client", started_ms=start, total_s=client_s, waited_s=provider_s + 0.002,
            wait_ended_ms=start + round((client_s - 0.001) * 1000), own_server=client.server.path(),
            peer_server=provider.server.path(), **common))
    return by_gateway, xroad_ids


async def populate(path: Path, gateway_id: str, records: list[oprecords.OpRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    store = SqliteOpStore(path, gateway_id)
    await store.open()
    try:
        await store.migrate()
        for i in range(0, len(records), 5000):
            await store.insert(records[i:i + 5000])
    finally:
        await store.close()


async def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR)
    rng = random.Random(5)
    work = Path(tempfile.mkdtemp(prefix="wasl-bench-inquiry-"))
    agencies_ = agencies(args.gateways)
    ports = free_ports(1 + 2 * len(agencies_))
    layout_ports = fed.Ports(registry=ports[0],
                             client_side={a.key: ports[1 + i] for i, a in enumerate(agencies_)},
                             server_side={a.key: ports[1 + len(agencies_) + i] for i, a in enumerate(agencies_)})
    t0 = time.perf_counter()
    layout = fed.build(work, layout_ports, [], agencies=agencies_)
    monitoring = enable_monitoring(layout.federation_file, agencies_[0].member.path())
    now_ms = int(time.time() * 1000)
    by_gateway, xroad_ids = generate(agencies_, args.transactions, now_ms, rng)
    for agency in agencies_:
        await populate(work / "state" / agency.key / "opmon.db", agency.server.path(),
                       by_gateway[agency.server.path()])
    print(f"generated and stored {args.transactions} transactions ({sum(map(len, by_gateway.values()))} records) "
          f"in {args.gateways} gateways' stores in {time.perf_counter() - t0:.1f} s", flush=True)

    registry = Registry(layout.federation_file)
    registry_runner = web.AppRunner(registry.app(), access_log=None)
    await registry_runner.setup()
    await web.TCPSite(registry_runner, "127.0.0.1", layout_ports.registry).start()
    gateways = []
    for agency in agencies_:
        gw = RunningGateway(load_model(layout.gateway_files[agency.key], GatewaySettings))
        gateways.append(gw)
    await asyncio.gather(*(gw.start() for gw in gateways))
    config = write_settings(work / "inquiry.yaml", gateway_file=layout.gateway_files[agencies_[0].key],
                            gateway_url=f"http://127.0.0.1:{layout_ports.client_side[agencies_[0].key]}",
                            client=monitoring, port=0, timeout_seconds=30)
    inquiry_runner, inquiry_port, service = await inquiry_service.start(load_model(config, InquirySettings), port=0)
    for _ in range(200):
        if service.conf.current is not None:
            break
        await asyncio.sleep(0.05)
    url = f"http://127.0.0.1:{inquiry_port}"
    lookups: list[float] = []
    aggregates: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            async def get(path: str, **params: str) -> dict:
                async with session.get(url + path, params=params) as resp:
                    body = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(f"{path}: HTTP {resp.status}: {body}")
                    return body

            await get("/api/v1/transaction", xroad_id=xroad_ids[0])  # warm the peer links
            for xroad_id in rng.sample(xroad_ids, args.lookups):
                started = time.perf_counter()
                answer = await get("/api/v1/transaction", xroad_id=xroad_id)
                lookups.append((time.perf_counter() - started) * 1000)
                assert answer["complete"], answer["unanswered"]
                [tx] = answer["transactions"]
                assert tx["complete"] and tx["xroad_id"] == xroad_id, tx
            for _ in range(args.aggregates):
                started = time.perf_counter()
                agg = await get("/api/v1/aggregates", last="24h", buckets="96")
                aggregates.append((time.perf_counter() - started) * 1000)
                assert agg["complete"], agg["unanswered"]
                assert agg["totals"]["count"] == args.transactions, agg["totals"]
            slowest = sorted(g["ms"] for g in agg["gateways"])
            print(f"last aggregate: gateways answered in {slowest[0]:.0f}..{slowest[-1]:.0f} ms "
                  f"(median {statistics.median(slowest):.0f} ms)")
            print(f"aggregate: {agg['totals']['count']} transactions, {agg['totals']['failed']} failed, "
                  f"p50 {agg['totals']['p50_ms']} ms, p95 {agg['totals']['p95_ms']} ms, "
                  f"{len(agg['pairs'])} agency pairs, {len(agg['services'])} services")
    finally:
        await inquiry_runner.cleanup()
        await asyncio.gather(*(gw.stop() for gw in gateways))
        await registry_runner.cleanup()
    lookup_p50 = statistics.median(lookups)
    aggregate_ms = statistics.median(aggregates)
    print(f"lookups: {len(lookups)} by X-Road id, p50 {lookup_p50:.1f} ms, p90 "
          f"{statistics.quantiles(lookups, n=10)[-1]:.1f} ms, max {max(lookups):.1f} ms (target p50 < 200 ms)")
    print(f"aggregates over 24 h: {', '.join(f'{a:.0f}' for a in aggregates)} ms (median {aggregate_ms:.0f} ms, "
          "target < 2000 ms)")
    print(f"inquiry_lookup_p50_ms={lookup_p50:.1f} inquiry_aggregate_ms={aggregate_ms:.1f}")
    return 0 if lookup_p50 < 200 and aggregate_ms < 2000 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=40)
    parser.add_argument("--aggregates", type=int, default=3)
    arguments = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(main(arguments)))
