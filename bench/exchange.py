"""Benchmark: the whole signed chain (client -> gateway A -> mTLS -> gateway B -> backend) against a bare
two-hop aiohttp reverse-proxy chain with the same mutual TLS and the same backend, measured in one run.

    python bench/exchange.py --seconds 10

Every process (load generator, proxies, backend) runs on its own uvloop event loop. The load alternates a
2 KB X-Road SOAP request and a 1 KB JSON REST request. Loops are bounded by time and by request count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.core import identifiers as ids  # noqa: E402
from gateway.core import soap  # noqa: E402
from gateway.demo import federation as fed  # noqa: E402
from gateway.demo.ports import free_port_range  # noqa: E402
from gateway.proxy import tls  # noqa: E402
from gateway.trust.pki import load_certificate  # noqa: E402

SERVICE = ids.ServiceId("DEMO", "GOV", "1001", "population", "echo")
CLIENT = ids.SubsystemId("DEMO", "GOV", "1003", "patients")


def uvloop_run(coro) -> object:  # type: ignore[no-untyped-def]
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def soap_payload(size: int = 2048) -> bytes:
    from lxml import etree

    body = etree.Element("{http://bench.example/}echo", nsmap={"b": "http://bench.example/"})
    etree.SubElement(body, "text").text = "x"
    base = len(soap.build_request(CLIENT, SERVICE, "00000000-0000-0000-0000-000000000000", body))
    etree.SubElement(body, "padding").text = "p" * max(0, size - base - 20)
    return soap.build_request(CLIENT, SERVICE, "00000000-0000-0000-0000-000000000000", body)


JSON_BODY = json.dumps({"declaration": {"year": 2025, "items": ["i" * 40] * 19}}).encode()[:1024]


# -- processes ---------------------------------------------------------------------------------------------------

async def _serve(app: web.Application, port: int, ssl_context=None) -> None:  # type: ignore[no-untyped-def]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context, backlog=1024).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


def backend_app() -> web.Application:
    """A SOAP service that echoes the request envelope (headers included) and a JSON echo service."""

    async def soap_echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="text/xml", charset="utf-8")

    async def json_echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/soap", soap_echo)
    app.router.add_route("*", "/rest{tail:.*}", json_echo)
    return app


def bare_proxy_app(upstream: str, session_factory) -> web.Application:  # type: ignore[no-untyped-def]
    """A plain reverse proxy: forward method, path, body and content type; no parsing, signing or checks."""
    holder: dict[str, aiohttp.ClientSession] = {}

    async def start(app: web.Application):  # type: ignore[no-untyped-def]
        holder["s"] = session_factory()
        yield
        await holder["s"].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with holder["s"].request(request.method, upstream + request.rel_url.raw_path_qs, data=body,
                                       headers={"Content-Type": request.headers.get("Content-Type", "")}) as resp:
            data = await resp.read()
            return web.Response(status=resp.status, body=data,
                                headers={"Content-Type": resp.headers.get("Content-Type", "")})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.cleanup_ctx.append(start)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def run_role(args: argparse.Namespace) -> None:
    pki = Path(args.pki) if args.pki else None
    if args.role == "backend":
        uvloop_run(_serve(backend_app(), args.port))
    elif args.role == "bare-a":  # plain HTTP in, mutual TLS out (pinned like a gateway)
        assert pki is not None
        ca = [load_certificate(pki / "ca" / "ca.pem")]
        fp = [fed.fingerprint(load_certificate(pki / "civil" / "auth.pem"))]

        def session() -> aiohttp.ClientSession:
            ctx = tls.pinned_client_context(pki / "health" / "auth.pem", pki / "health" / "auth.key", ca, fp)
            return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=0, limit_per_host=512))

        uvloop_run(_serve(bare_proxy_app(args.upstream, session), args.port))
    elif args.role == "bare-b":  # mutual TLS in, plain HTTP to the backend
        assert pki is not None
        ca = [load_certificate(pki / "ca" / "ca.pem")]
        ctx = tls.server_context(pki / "civil" / "auth.pem", pki / "civil" / "auth.key", ca)

        def session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=512))

        uvloop_run(_serve(bare_proxy_app(args.upstream, session), args.port, ctx))
    elif args.role == "load":
        result = uvloop_run(drive(args.url, args.rest_url, args.seconds, args.concurrency, args.max_requests))
        print(json.dumps(result))


# -- the load generator -------------------------------------------------------------------------------------------

async def drive(soap_url: str, rest_url: str, seconds: float, concurrency: int,
                max_requests: int) -> dict[str, float]:
    soap_body = soap_payload()
    latencies: list[float] = []
    errors = 0
    sent = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(i: int) -> bool:
            if i % 2 == 0:
                async with session.post(soap_url, data=soap_body,
                                        headers={"Content-Type": "text/xml; charset=utf-8"}) as resp:
                    await resp.read()
                    return resp.status == 200
            async with session.post(rest_url, data=JSON_BODY,
                                    headers={"Content-Type": "application/json",
                                             "X-Road-Client": CLIENT.path()}) as resp:
                await resp.read()
                return resp.status == 200

        # Warm the pools (TLS handshakes) before measuring.
        await asyncio.gather(*(one(i) for i in range(concurrency * 2)))
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal sent, errors
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                t0 = time.perf_counter()
                try:
                    ok = await one(sent)
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                if not ok:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    return {"rps": n / elapsed, "p50_ms": latencies[n // 2] * 1000, "p99_ms": latencies[int(n * 0.99)] * 1000,
            "requests": n, "errors": errors}


# -- orchestration ------------------------------------------------------------------------------------------------

def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a benchmark process exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


def load(soap_url: str, rest_url: str, seconds: float, concurrency: int, max_requests: int) -> dict[str, float]:
    """Drive the chain with wrk when it is installed (a C load generator leaves the cores to the system under
    test), else with the bounded aiohttp driver above."""
    if shutil.which("wrk"):
        from urllib.parse import urlsplit

        work = Path(tempfile.mkdtemp(prefix="wasl-wrk-"))
        (work / "soap.xml").write_bytes(soap_payload())
        (work / "body.json").write_bytes(JSON_BODY)
        soap, rest = urlsplit(soap_url), urlsplit(rest_url)
        env = dict(os.environ, WASL_SOAP_PATH=soap.path, WASL_REST_PATH=rest.path, WASL_REST_CLIENT=CLIENT.path(),
                   WASL_SOAP_FILE=str(work / "soap.xml"), WASL_JSON_FILE=str(work / "body.json"))
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:.0f}s", "--timeout", "10s",
                              "-s", str(ROOT / "bench" / "mixed.lua"), f"{soap.scheme}://{soap.netloc}"],
                             capture_output=True, check=True, timeout=seconds + 60, env=env, text=True)
        line = next(x for x in out.stdout.splitlines() if x.startswith("WASL_RESULT "))
        return json.loads(line.removeprefix("WASL_RESULT "))
    out = subprocess.run([sys.executable, __file__, "--role", "load", "--url", soap_url, "--rest-url", rest_url,
                          "--seconds", str(seconds), "--concurrency", str(concurrency),
                          "--max-requests", str(max_requests)], capture_output=True, check=True, timeout=seconds + 120)
    return json.loads(out.stdout)


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    """CPU time used so far by these processes and their workers (same process group), from /proc."""
    groups = {p.pid for p in procs}
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups:  # field 5 of stat: the process group
            total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(all CPU ticks, idle and iowait ticks) of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]


def measured(procs: list[subprocess.Popen[bytes]], run) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Run the load and add the proxies' CPU microseconds per request, which contention barely moves, and how
    idle the machine was: a chain that leaves the cores idle is bound by latency, not by CPU."""
    before, (total_before, idle_before) = cpu_seconds(procs), machine_ticks()
    result = run()
    used = cpu_seconds(procs) - before
    total_after, idle_after = machine_ticks()
    result["cpu_us_per_request"] = used / max(result["requests"], 1) * 1e6
    result["idle_pct"] = (idle_after - idle_before) / max(total_after - total_before, 1) * 100
    return result


def wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a gateway exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} was not ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    # Every exchange waits for durable group commits; enough concurrent callers keep both cores busy in every
    # phase, so the ratios compare throughput rather than commit latency (at 64 the log phase is latency-bound).
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--max-requests", type=int, default=500_000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes per gateway")
    # One round's ratio swings by ±0.03 with the machine's drift; the median of three interleaved rounds is what
    # the team's performance notes report for every figure.
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure the baseline and every phase this many times, interleaved; report medians "
                             "(default 3)")
    parser.add_argument("--ocsp", action="store_true",
                        help="the CA runs its OCSP responder, so every signed message carries a stapled status")
    parser.add_argument("--profile", type=Path, help="write each gateway's py-spy collapsed stacks here (SQLite phase)")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--pki", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--rest-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        run_role(args)
        return

    work = Path(tempfile.mkdtemp(prefix="wasl-bench-"))
    backend_port = free_port()
    # Below the ephemeral range: the baseline's thousands of outgoing connections cannot take these meanwhile.
    base = free_port_range(16, start=20000 + os.getpid() % 50 * 100)
    ports = fed.ports_from(base, fed.DEMO_AGENCIES)
    backend = f"http://127.0.0.1:{backend_port}"
    services = [
        fed.Service("civil", "echo", "soap", f"{backend}/soap", ("SUBSYSTEM:DEMO/GOV/1003/patients",)),
        fed.Service("civil", "bench", "rest", f"{backend}/rest", ("SUBSYSTEM:DEMO/GOV/1003/patients",)),
    ]
    ocsp_port = free_port() if args.ocsp else None
    layout = fed.build(work, ports, services, ocsp_url=f"http://127.0.0.1:{ocsp_port}/" if ocsp_port else None)
    procs: list[subprocess.Popen[bytes]] = []
    rounds: dict[str, list[dict[str, float]]] = {}
    try:
        procs.append(spawn(__file__, "--role", "backend", "--port", str(backend_port)))
        wait_port(backend_port, procs[-1])

        # Baseline: bare chain A (HTTP in) -> B (mTLS) -> backend. It idles while the gateways are measured.
        b_port, a_port = free_port(), free_port()
        bare_procs = [spawn(__file__, "--role", "bare-b", "--port", str(b_port), "--upstream", backend,
                            "--pki", str(work / "pki"))]
        wait_port(b_port, bare_procs[-1])
        bare_procs.append(spawn(__file__, "--role", "bare-a", "--port", str(a_port),
                                "--upstream", f"https://127.0.0.1:{b_port}", "--pki", str(work / "pki")))
        wait_port(a_port, bare_procs[-1])
        procs += bare_procs

        if ocsp_port:
            procs.append(spawn("-m", "gateway.cli", "pki", "ocsp", "serve", "--ca", str(work / "pki" / "ca"),
                               "--host", "127.0.0.1", "--port", str(ocsp_port)))
            wait_port(ocsp_port, procs[-1])
        procs.append(spawn("-m", "gateway.cli", "registry", "serve", "--config", str(layout.federation_file)))
        wait_port(ports.registry, procs[-1])
        # The signed chain in each message-log setting, with the same federation and backend.
        phases = {"exchange": {"store": "sqlite"}, "nolog": {"enabled": False}}
        if postgres_reachable():
            phases["postgresql"] = {"store": "postgresql", "dsn": create_bench_database()}
        # Rounds interleave the baseline with the phases, so drift of the machine hits both alike.
        for _ in range(args.rounds):
            rounds.setdefault("baseline", []).append(measured(bare_procs, lambda: load(
                f"http://127.0.0.1:{a_port}/soap", f"http://127.0.0.1:{a_port}/rest/declarations",
                args.seconds, args.concurrency, args.max_requests)))
            for phase, message_log in phases.items():
                rounds.setdefault(phase, []).append(run_gateways(layout, ports, args, message_log))
    finally:
        stop(procs)

    # Each phase is reported by its median round; the ratio is the median of the rounds' own ratios.
    results = {phase: _median_run(runs) for phase, runs in rounds.items()}
    bare, exchange, nolog = results["baseline"], results["exchange"], results["nolog"]
    names = {"baseline": "baseline (bare mTLS chain)", "exchange": "exchange (signed, SQLite log)",
             "nolog": "exchange, message log off", "postgresql": "exchange (signed, PostgreSQL log)"}
    for key, r in results.items():
        print(f"{names[key]:<34} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
              f"requests {r['requests']:.0f}  errors {r['errors']:.0f}  "
              f"proxy CPU {r['cpu_us_per_request']:.0f} us/request  machine idle {r['idle_pct']:.0f}%")
    print(f"log_rps={exchange['rps']:.1f} nolog_rps={nolog['rps']:.1f} log_ratio={exchange['rps'] / nolog['rps']:.3f} "
          "store=sqlite")
    if "postgresql" in results:
        pg = results["postgresql"]
        print(f"log_rps={pg['rps']:.1f} nolog_rps={nolog['rps']:.1f} log_ratio={pg['rps'] / nolog['rps']:.3f} "
              "store=postgresql")
    ratios = [e["rps"] / b["rps"] for e, b in zip(rounds["exchange"], rounds["baseline"], strict=True)]
    if len(ratios) > 1:
        print("ratio by round: " + " ".join(f"{r:.3f}" for r in ratios))
    ratio = statistics.median(ratios)
    print(f"exchange_rps={exchange['rps']:.1f} baseline_rps={bare['rps']:.1f} ratio={ratio:.3f} "
          f"p99_ms={exchange['p99_ms']:.2f}")


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The round with the median throughput (the lower middle one of an even count)."""
    return sorted(runs, key=lambda r: r["rps"])[(len(runs) - 1) // 2]


def run_gateways(layout: fed.Layout, ports: fed.Ports, args: argparse.Namespace,
                 message_log: dict[str, object]) -> dict[str, float]:
    """Start the two gateways with this message-log setting, drive the load through them, stop them."""
    import yaml

    procs = []
    try:
        for key in ("health", "civil"):
            path = layout.gateway_files[key]
            config = yaml.safe_load(path.read_text())
            config["message_log"] = message_log
            config["workers"] = args.workers
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            procs.append(spawn("-m", "gateway.cli", "gateway", "serve", "--config", str(path)))
        for key, proc in zip(("health", "civil"), procs, strict=True):
            wait_ready(f"http://127.0.0.1:{ports.client_side[key]}/readyz", proc)
        entry = f"http://127.0.0.1:{ports.client_side['health']}"
        profilers = profile(procs, args) if args.profile and message_log.get("store") == "sqlite" else []
        try:
            return measured(procs, lambda: load(entry + "/", entry + "/r1/DEMO/GOV/1001/population/bench/declarations",
                                                args.seconds, args.concurrency, args.max_requests))
        finally:
            for profiler in profilers:
                profiler.wait(timeout=args.seconds + 60)
    finally:
        stop(procs)


def profile(procs: list[subprocess.Popen[bytes]], args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    """Sample each gateway with py-spy for the length of the load; collapsed stacks, one file per gateway."""
    args.profile.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "--subprocesses", "--nonblocking",
                              "--duration", str(int(args.seconds)), "--format", "raw",
                              "--output", str(args.profile / f"{key}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for key, proc in zip(("client-gateway", "provider-gateway"), procs, strict=True)]


PG_ADMIN_DSN = os.environ.get("WASL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_reachable() -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", 5432)) == 0


def create_bench_database() -> str:
    """A fresh database per run, so chains from earlier runs never mix in."""
    import asyncpg

    name = f"wasl_bench_{os.getpid()}_{int(time.time())}"

    async def create() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


if __name__ == "__main__":
    main()
