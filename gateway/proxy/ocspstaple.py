"""The gateway's own certificate status: fetch, check, cache and staple OCSP responses for its sign and auth certs.

Each certificate whose CA lists an OCSP responder in the global configuration gets a response fetched in the
background, checked exactly as a peer would check it (core/ocsp.py), kept in memory and on disk (so a restart
during a responder outage still has it), and refreshed at a quarter of the freshness limit. The sign
certificate's response is stapled to every signed message. A response that says "revoked" replaces the good
one at once: this gateway then refuses to sign, rather than staple a status it knows is out of date.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.core import ocsp
from gateway.core.certificates import CertificateError, check_issued_by_approved_ca
from gateway.core.faults import Code, Fault, Origin
from gateway.core.globalconf import GlobalConf
from gateway.monitoring import metrics
from gateway.trust.ocsp_responder import OcspFetchError, fetch_response

log = logging.getLogger("wasl.ocsp")
FETCH_TIMEOUT_SECONDS = 10.0


@dataclass
class _Entry:
    label: str  # "sign DEMO/GOV/1001" or "auth"
    certificate: x509.Certificate
    response: bytes = b""
    checked: ocsp.CheckedStatus | None = None
    refused: ocsp.OcspError | None = None  # the responder's latest answer, when it proved the certificate bad
    last_error: str | None = None
    fetched_at: dt.datetime | None = None
    failures: int = field(default=0)
    issuer_for: tuple[int, x509.Certificate | None] | None = None  # (configuration serial, its issuing CA)


class OwnCertificateStatus:
    def __init__(self, certificates: dict[str, x509.Certificate], state_dir: Path) -> None:
        self._entries = {label: _Entry(label, cert) for label, cert in certificates.items()}
        self._retired: dict[bytes, _Entry] = {}  # rotated-out certificates, by DER, for messages in flight
        self._dir = Path(state_dir) / "ocsp"

    async def install(self, label: str, certificate: x509.Certificate, session: aiohttp.ClientSession,
                      conf: GlobalConf | None, now: dt.datetime) -> None:
        """Track a rotated certificate under ``label``, with its status fetched first; the one it replaces keeps
        serving messages its key already signed. Raise RuntimeError if its CA runs OCSP and no good status came."""
        entry = _Entry(label, certificate)
        if conf is not None:
            await self._refresh_entry(entry, session, conf, now)
            issuer = self._issuer(entry, conf, now)
            if issuer is not None and conf.ocsp_responders_for(issuer) and entry.checked is None:
                raise RuntimeError(f"no good OCSP status for the new {label} certificate: "
                                   f"{entry.refused or entry.last_error}")
        old = self._entries.get(label)
        if old is not None:
            self._retired[old.certificate.public_bytes(Encoding.DER)] = old
        self._entries[label] = entry

    # -- the hot path ------------------------------------------------------------------------------------------

    def staple(self, label: str, conf: GlobalConf, now: dt.datetime, origin: Origin,
               certificate_der: bytes | None = None) -> bytes:
        """The response to staple for ``label``'s certificate (or the rotated-out one with ``certificate_der``):
        b"" when its CA runs no OCSP; a fault when one is needed and this gateway holds no fresh good one."""
        entry = self._entries[label]
        if certificate_der is not None and certificate_der in self._retired:
            entry = self._retired[certificate_der]
        issuer = self._issuer(entry, conf, now)
        if issuer is None or not conf.ocsp_responders_for(issuer):
            return b""
        if entry.refused is not None:
            raise Fault(origin, entry.refused.code, f"own {label} certificate: {entry.refused}")
        if entry.checked is None or now > entry.checked.fresh_until:
            why = entry.last_error or "no response fetched yet"
            raise Fault(origin, Code.CERT_VALIDATION,
                        f"own {label} certificate has no fresh OCSP response ({why})")
        return entry.response

    # -- readiness and metrics ---------------------------------------------------------------------------------

    def problem(self, conf: GlobalConf | None, now: dt.datetime) -> str | None:
        """Why this gateway cannot sign or authenticate now, as far as certificate status goes."""
        if conf is None:
            return None
        for entry in self._entries.values():
            issuer = self._issuer(entry, conf, now)
            if issuer is None or not conf.ocsp_responders_for(issuer):
                continue
            if entry.refused is not None:
                return f"{entry.label} certificate: {entry.refused}"
            if entry.checked is None or now > entry.checked.fresh_until:
                return (f"{entry.label} certificate has no fresh OCSP response "
                        f"({entry.last_error or 'no response fetched yet'})")
        return None

    def update_gauges(self, now: dt.datetime) -> None:
        for entry in self._entries.values():
            if entry.checked is not None:
                metrics.OCSP_RESPONSE_AGE.labels(entry.label).set((now - entry.checked.this_update).total_seconds())

    # -- fetching ----------------------------------------------------------------------------------------------

    @staticmethod
    def _issuer(entry: _Entry, conf: GlobalConf, now: dt.datetime) -> x509.Certificate | None:
        # Finding the CA verifies a signature (~100 µs): once per configuration, not once per message.
        if entry.issuer_for is not None and entry.issuer_for[0] == conf.serial:
            return entry.issuer_for[1]
        try:
            issuer = check_issued_by_approved_ca(entry.certificate, conf.approved_ca_certificates, now)
        except CertificateError:
            issuer = None
        entry.issuer_for = (conf.serial, issuer)
        return issuer

    def load_cached(self, conf: GlobalConf, now: dt.datetime) -> None:
        """Take responses kept on disk by an earlier run, if they still check."""
        for entry in self._entries.values():
            path = self._path(entry)
            issuer = self._issuer(entry, conf, now)
            if issuer is None or not path.exists():
                continue
            try:
                der = path.read_bytes()
                entry.checked, entry.response = ocsp.check_response(der, entry.certificate, issuer, now,
                                                                    conf.ocsp_freshness), der
            except (OSError, ocsp.OcspError) as exc:
                log.info("cached OCSP response for %s not used: %s", entry.label, exc)

    async def refresh(self, session: aiohttp.ClientSession, conf: GlobalConf, now: dt.datetime) -> None:
        """Fetch and check a response for every certificate whose CA runs OCSP, trying each listed responder."""
        for entry in list(self._entries.values()):
            await self._refresh_entry(entry, session, conf, now)

    async def _refresh_entry(self, entry: _Entry, session: aiohttp.ClientSession, conf: GlobalConf,
                             now: dt.datetime) -> None:
        issuer = self._issuer(entry, conf, now)
        responders = conf.ocsp_responders_for(issuer) if issuer is not None else ()
        if issuer is None or not responders:
            return
        errors = []
        for url in responders:
            try:
                der = await fetch_response(session, url, entry.certificate, issuer, FETCH_TIMEOUT_SECONDS)
                checked = ocsp.check_response(der, entry.certificate, issuer, dt.datetime.now(dt.UTC),
                                              conf.ocsp_freshness)
            except ocsp.OcspError as exc:
                if exc.code is Code.CERT_REVOKED:
                    entry.refused, entry.checked, entry.response = exc, None, b""
                    log.error("own %s certificate is revoked: %s", entry.label, exc)
                    break
                errors.append(f"{url}: {exc}")
                continue
            except OcspFetchError as exc:
                errors.append(str(exc))
                continue
            entry.response, entry.checked, entry.refused = der, checked, None
            entry.last_error, entry.fetched_at, entry.failures = None, now, 0
            await asyncio.to_thread(self._save, entry, der)
            break
        else:
            entry.failures += 1
            entry.last_error = "; ".join(errors)
            metrics.OCSP_FETCH_FAILURES.labels(entry.label).inc()
            log.warning("OCSP refresh for %s failed: %s", entry.label, entry.last_error)

    async def run(self, session: aiohttp.ClientSession, current_conf: Callable[[], GlobalConf | None]) -> None:
        """After a first ``refresh``: refresh forever, at a quarter of the freshness limit (at least every second,
        at most every 5 minutes)."""
        while True:
            conf = current_conf()
            interval = 5.0 if conf is None else min(300.0, max(1.0, conf.ocsp_freshness.total_seconds() / 4))
            await asyncio.sleep(interval)
            conf = current_conf()
            if conf is not None:
                try:
                    await self.refresh(session, conf, dt.datetime.now(dt.UTC))
                except Exception:  # a bug here must not stop the refresh loop for good
                    log.exception("OCSP refresh failed unexpectedly")

    def _path(self, entry: _Entry) -> Path:
        return self._dir / f"{entry.certificate.serial_number:x}.der"

    def _save(self, entry: _Entry, der: bytes) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self._path(entry)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(der)
        os.replace(tmp, path)
