"""The built-in dashboard in a real headless Chromium (Debian's, driven by Playwright) during live traffic: it loads,
shows the federation, finds one transaction with its timeline, works right to left in Arabic, and fetches nothing
from outside."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import pytest

from gateway.core import identifiers as ids
from tests.conftest import IN_CI, soap_request, stop_federation
from tests.test_exchange import post_soap
from tests.test_inquiry import start_monitored

CHROMIUM = "/usr/bin/chromium"
ECHO = ids.ServiceId("DEMO", "GOV", "1001", "population", "echo")
DENIED = ids.ServiceId("DEMO", "GOV", "1001", "population", "getPerson", "v1")


def _browser_or_skip() -> None:
    missing = []
    if shutil.which(CHROMIUM) is None:
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing.append("playwright for Python (pip install playwright; no 'playwright install' needed)")
    if missing:
        reason = "the browser test needs " + " and ".join(missing)
        if IN_CI:
            pytest.fail(reason)  # CI installs both: a missing browser there is a broken build, not a skip
        pytest.skip(reason)


async def test_dashboard_in_headless_chromium_during_traffic(tmp_path: Path) -> None:
    _browser_or_skip()
    from playwright.async_api import async_playwright

    f, runner, mon = await start_monitored(tmp_path / "federation")
    stop = asyncio.Event()

    async def traffic() -> None:  # demo-like load: bounded in count and time
        for i in range(400):
            if stop.is_set():
                return
            if i % 7 == 3:
                await post_soap(f, "tax", soap_request(f.subsystem("tax"), DENIED, xroad_id=f"load-denied-{i}"))
            else:
                await post_soap(f, "health", soap_request(f.subsystem("health"), ECHO, xroad_id=f"load-{i}"))
            await asyncio.sleep(0.03)

    status, _, _ = await post_soap(f, "health", soap_request(f.subsystem("health"), ECHO, xroad_id="browser-1",
                                                            user_id="EE-nurse-3"),
                                   traceparent="00-11112222333344445555666677778888-1111222233334444-01")
    assert status == 200
    load = asyncio.create_task(traffic())
    errors: list[str] = []
    outside: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
                page.on("request", lambda req: None if req.url.startswith(mon.url) else outside.append(req.url))
                await page.goto(mon.url + "/?lang=en", wait_until="load")
                await page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
                await page.wait_for_function("Number(document.getElementById('kpi-count').textContent) > 1",
                                             timeout=15_000)
                assert await page.locator("#matrix td.cell").count() >= 2  # Health -> Civil, Tax -> Civil
                assert await page.locator("#gateways tbody tr").count() == 3
                assert await page.locator("#gateways .pill.good").count() == 3
                assert await page.locator("#chart-volume canvas").count() >= 1
                assert await page.locator("#chart-latency canvas").count() >= 1
                await page.wait_for_selector("#failing tbody tr")  # the denied calls show as failing
                assert "getPerson" in await page.locator("#failing").inner_text()
                # Search one transaction and read its timeline.
                await page.fill("#search-input", "browser-1")
                await page.click("#search-button")
                card = page.locator(".tx-card[data-xroad-id='browser-1']")
                await card.wait_for(timeout=10_000)
                text = await card.inner_text()
                for expected in ("DEMO/GOV/1003/patients", "DEMO/GOV/1001/population/echo", "EE-nurse-3",
                                 "11112222333344445555666677778888", "DEMO/GOV/1001/gw-civil",
                                 "DEMO/GOV/1003/gw-health"):
                    assert expected in text, (expected, text)
                assert await card.get_attribute("data-status") == "ok"
                assert await card.locator(".timeline .event").count() == 8
                assert await card.locator(".stack .seg").count() == 4
                await page.screenshot(path=str(tmp_path / "dashboard-en.png"), full_page=True)
                # Arabic, right to left.
                await page.click("#lang")
                await page.wait_for_function("document.documentElement.dir === 'rtl'")
                assert await page.locator("h1").inner_text() == "غرفة التحكم بالاتحاد"
                assert await page.get_attribute("html", "lang") == "ar"
                await page.wait_for_selector(".tx-card[data-xroad-id='browser-1']")
                assert "التسلسل الزمني" in await page.locator("#tx-result").inner_text()
                box = await page.locator("h1").bounding_box()
                assert box is not None and box["x"] > 700  # the title sits on the right in RTL
                await page.screenshot(path=str(tmp_path / "dashboard-ar.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(load, 10)
        await runner.cleanup()
        await stop_federation(f)
    assert errors == [], errors
    assert outside == [], outside  # nothing fetched from the internet
    assert (tmp_path / "dashboard-en.png").stat().st_size > 10_000
    assert (tmp_path / "dashboard-ar.png").stat().st_size > 10_000
