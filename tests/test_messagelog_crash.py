"""kill -9 of real `wasl gateway serve` processes under concurrent load: every answered exchange is in both logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests import messagelog_support as support
from tests.messagelog_support import ROOT, LogFederation, start_log_federation, stop_log_federation

pg_database = support.pg_database  # fixtures
store_settings = support.store_settings

AGENCIES = ("civil", "tax")  # the consumer's gateway and the provider's


def _spawn(f: LogFederation, agency: str, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "gateway", "serve", "--config",
                             str(f.layout.gateway_files[agency])], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


async def _ready(f: LogFederation, procs: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + 30
    for agency, proc in procs.items():
        while True:
            assert proc.poll() is None, f"{agency} exited: {(logs / f'{agency}.log').read_text()[-3000:]}"
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with f.session.get(f.client_url(agency, "/readyz")) as resp:
                    if resp.status == 200:
                        break
            assert time.monotonic() < deadline, f"{agency} not ready: {(logs / f'{agency}.log').read_text()[-3000:]}"
            await asyncio.sleep(0.05)


async def test_kill_9_under_load_loses_no_answered_exchange(tmp_path: Path, store_settings: dict[str, Any]) -> None:
    f = await start_log_federation(tmp_path, {**store_settings, "timestamp_interval_seconds": 0.2,
                                              "timestamp_timeout_seconds": 2.0}, start_gateways=False)
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = {a: _spawn(f, a, logs / f"{a}.log") for a in AGENCIES}
    try:
        await _ready(f, procs, logs)
        acked: list[str] = []
        stop = asyncio.Event()

        async def worker(w: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                xroad_id = f"kill-{w}-{i}"
                try:
                    status, headers, _ = await f.rest(i, xroad_id=xroad_id)
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.01)
                    continue
                if status == 200:
                    assert headers["X-Road-Id"] == xroad_id
                    acked.append(xroad_id)

        workers = [asyncio.create_task(worker(w)) for w in range(32)]
        deadline = time.monotonic() + 30
        while len(acked) < 400 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        in_flight_at_kill = len(acked)
        for proc in procs.values():  # both at once, mid-load
            os.kill(proc.pid, signal.SIGKILL)
        for proc in procs.values():  # the TSA and registry run in this loop: never block it
            assert await asyncio.to_thread(proc.wait, 10) == -signal.SIGKILL
        await asyncio.sleep(0.2)  # what was in flight fails now
        stop.set()
        await asyncio.gather(*workers)
        assert in_flight_at_kill >= 400, f"only {in_flight_at_kill} exchanges answered before the kill"

        # Restart on the same logs: they open, verify, continue their chains, and stamp what was left.
        procs = {a: _spawn(f, a, logs / f"{a}.log") for a in AGENCIES}
        await _ready(f, procs, logs)
        status, _, _ = await f.rest("after", xroad_id="after-restart")
        assert status == 200
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for agency, proc in procs.items():
            assert await asyncio.to_thread(proc.wait, 20) == 0, (logs / f"{agency}.log").read_text()[-3000:]

        for agency, side in (("civil", "client"), ("tax", "provider")):
            store = f.store(agency)
            async with store:
                state = await store.state()
                assert await store.verify() == [], f"{agency}: the chain does not verify after kill -9"
                records = await store.range(1, state.last.seq)
                # No half-written record: every seq up to the head is there, whole (verify rehashed each one).
                assert [r.seq for r in records] == list(range(1, state.last.seq + 1))
                held: dict[str, set[tuple[str, str]]] = {}
                for r in records:
                    held.setdefault(r.xroad_id, set()).add((r.side, r.direction))
                both = {(side, "request"), (side, "response")}
                lost = [x for x in [*acked, "after-restart"] if held.get(x) != both]
                assert not lost, f"{agency}: {len(lost)} answered exchange(s) without both records, e.g. {lost[:5]}"
                assert state.stamped_seq == state.last.seq, f"{agency}: backlog left unstamped after restart"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        await stop_log_federation(f)
