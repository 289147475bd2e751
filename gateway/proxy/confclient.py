"""Keeps a gateway's global configuration current: download, verify, keep the last good copy on disk."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import aiohttp

from gateway.core.faults import Code, Fault, Origin
from gateway.core.globalconf import (
    MAX_CONTAINER_BYTES,
    ConfigurationAnchor,
    GlobalConf,
    GlobalConfError,
    normalise_fingerprint,
    verify_container,
)
from gateway.proxy.httpio import read_limited

log = logging.getLogger("wasl.globalconf")
FILE_NAME = "globalconf.json"
LEARNED_FILE_NAME = "anchor-learned.json"  # signing keys announced by verified configurations


def _read_learned(path: Path) -> list[str]:
    try:
        values = json.loads(path.read_text())
        return [normalise_fingerprint(v) for v in values if isinstance(v, str)]
    except (OSError, ValueError):
        return []


def _write_learned(path: Path, fingerprints: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(fingerprints))
    os.replace(tmp, path)


def _with_learned(anchor: ConfigurationAnchor, fingerprints: list[str]) -> ConfigurationAnchor:
    trusted = list(dict.fromkeys([*anchor.signing_cert_sha256, *fingerprints]))
    return anchor.model_copy(update={"signing_cert_sha256": trusted})


class GlobalConfClient:
    def __init__(self, anchor: ConfigurationAnchor, state_dir: Path, refresh_seconds: float | None = None) -> None:
        self.configured_anchor = anchor
        self.learned_path = state_dir / LEARNED_FILE_NAME
        self.anchor = _with_learned(anchor, _read_learned(self.learned_path))
        self.path = state_dir / FILE_NAME
        self.refresh_override = refresh_seconds
        self.current: GlobalConf | None = None
        self.last_error: str | None = None
        self.last_success: dt.datetime | None = None
        self._listeners: list[Callable[[GlobalConf], None]] = []

    def on_change(self, listener: Callable[[GlobalConf], None]) -> None:
        self._listeners.append(listener)

    def _install(self, conf: GlobalConf) -> None:
        changed = self.current is None or conf.serial != self.current.serial
        self.current = conf
        if changed:
            for listener in self._listeners:
                listener(conf)

    def load_cached(self) -> bool:
        """Start from the last good copy, even an expired one: requests then fail with OutdatedGlobalConf
        instead of the gateway refusing to start."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return False
        try:
            self._install(verify_container(blob, self.anchor, dt.datetime.now(dt.UTC), allow_expired=True))
        except GlobalConfError as exc:
            log.error("ignoring the stored global configuration %s: %s", self.path, exc)
            return False
        return True

    def verify_and_keep(self, blob: bytes, now: dt.datetime, held: int | None) -> GlobalConf:
        """Verify a downloaded copy against the anchor and the copy held; keep it on disk if good.
        Runs in a worker thread (disk I/O), so it touches no state of the event loop."""
        conf = verify_container(blob, self.anchor, now, held_serial=held)
        if held is None or conf.serial != held:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One temporary name per process: worker processes refresh independently.
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(blob)
            os.replace(tmp, self.path)  # atomic: a crash never leaves a half-written copy
        return conf

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        url = self.anchor.registry_url.rstrip("/") + "/globalconf"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status != 200:
                    raise GlobalConfError(Code.NETWORK_ERROR, f"registry answered HTTP {resp.status}")
                blob = await read_limited(resp.content, MAX_CONTAINER_BYTES)
                if blob is None:
                    raise GlobalConfError(Code.MALFORMED_GLOBALCONF, "global configuration is too large")
            held = self.current.serial if self.current is not None else None
            conf = await asyncio.to_thread(self.verify_and_keep, blob, dt.datetime.now(dt.UTC), held)
            self._install(conf)  # back on the event loop: listeners rebuild pools and TLS contexts
            await self._learn(conf)
            self.last_error = None
            self.last_success = dt.datetime.now(dt.UTC)
        except GlobalConfError as exc:
            self.last_error = str(exc)
            log.warning("global configuration refused: %s", exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.last_error = f"registry unreachable: {exc.__class__.__name__}"
            log.warning("global configuration download failed: %s", self.last_error)
        except OSError as exc:
            self.last_error = f"could not keep the global configuration on disk: {exc}"
            log.error("%s", self.last_error)

    async def _learn(self, conf: GlobalConf) -> None:
        """Trust the signing keys the (verified) configuration announces for a coming switch, and remember
        them on disk so a restart after the switch still verifies the stored copy."""
        new = [fp for fp in conf.document.next_signing_cert_sha256 if fp not in self.anchor.signing_cert_sha256]
        if not new:
            return
        self.anchor = _with_learned(self.anchor, new)
        learned = [fp for fp in self.anchor.signing_cert_sha256
                   if fp not in self.configured_anchor.signing_cert_sha256]
        await asyncio.to_thread(_write_learned, self.learned_path, learned)
        log.info("trusting announced configuration-signing certificate(s) %s", ", ".join(new))

    def refresh_interval(self) -> float:
        if self.refresh_override is not None:
            return self.refresh_override
        return float(self.current.document.refresh_seconds) if self.current else 5.0

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self.refresh(session)
            # Until a first copy arrives, retry quickly: the gateway cannot relay anything without one.
            await asyncio.sleep(self.refresh_interval() if self.current else 1.0)

    def require(self, now: dt.datetime, origin: Origin) -> GlobalConf:
        conf = self.current
        if conf is None:
            raise Fault(origin, Code.OUTDATED_GLOBALCONF, "no global configuration has been downloaded yet")
        conf.require_fresh(now, origin)
        return conf

    async def stop(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
