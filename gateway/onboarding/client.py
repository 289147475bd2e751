"""Sending signed registration requests to the registry's management API over mutual TLS."""

from __future__ import annotations

import datetime as dt
import json
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.core import registration as reg
from gateway.core.globalconf import (
    MAX_CONTAINER_BYTES,
    ConfigurationAnchor,
    GlobalConf,
    GlobalConfError,
    verify_container,
)
from gateway.core.settings import GatewaySettings
from gateway.registry.management import REQUESTS_PATH
from gateway.trust.pki import load_certificate, load_key


class RegistrationFailed(RuntimeError):
    """The registry refused the request, or could not be reached; the message is the registry's or the network's."""


@dataclass(frozen=True)
class Submitted:
    id: str
    state: str
    target: str


def download_conf(anchor: ConfigurationAnchor, timeout: float = 10.0) -> GlobalConf:
    """Fetch the registry's current global configuration and verify it against ``anchor`` (for CLI commands)."""
    import urllib.request

    url = anchor.registry_url.rstrip("/") + "/globalconf"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            blob = resp.read(MAX_CONTAINER_BYTES + 1)
    except OSError as exc:
        raise RegistrationFailed(f"registry {url} unreachable: {exc}") from exc
    try:
        return verify_container(blob, anchor, dt.datetime.now(dt.UTC))
    except GlobalConfError as exc:
        raise RegistrationFailed(f"registry {url}: {exc}") from exc


def _tls(settings: GatewaySettings, conf: GlobalConf) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata="".join(c.public_bytes(Encoding.PEM).decode()
                                             for c in conf.approved_ca_certificates))
    ctx.load_cert_chain(settings.auth.certificate, settings.auth.key)
    return ctx


def build(settings: GatewaySettings, kind: reg.Kind, member: str | None = None, **fields: Any) -> bytes:
    """A request for ``member`` (default: the gateway's owner), signed with that member's sign key here."""
    member = member or settings.server_id.owner.path()
    entry = next((s for s in settings.signing if s.member == member), None)
    if entry is None:
        raise RegistrationFailed(f"this gateway holds no sign key for member {member}")
    if kind is reg.Kind.REGISTER_GATEWAY:
        fields.setdefault("server", settings.server_id.path())
        fields.setdefault("auth_certificate", load_certificate(settings.auth.certificate).public_bytes(Encoding.DER))
    request = reg.new_request(kind, member, dt.datetime.now(dt.UTC), **fields)
    if entry.pkcs11 is not None:
        from gateway.trust.pkcs11_signer import Pkcs11Signer

        token = Pkcs11Signer(entry.pkcs11)
        try:
            return reg.sign(request, token.sign_blocking, load_certificate(entry.certificate))
        finally:
            token.close()
    assert entry.key is not None
    return reg.sign(request, load_key(entry.key), load_certificate(entry.certificate))


async def submit(settings: GatewaySettings, conf: GlobalConf, signed: bytes, timeout: float = 15.0) -> Submitted:
    url = conf.document.management_service
    if not url:
        raise RegistrationFailed("the global configuration names no management service")
    connector = aiohttp.TCPConnector(ssl=_tls(settings, conf))
    try:
        async with aiohttp.ClientSession(connector=connector) as session, session.post(
                url + REQUESTS_PATH, data=signed, timeout=aiohttp.ClientTimeout(total=timeout),
                headers={"Content-Type": "application/json"}) as resp:
            body = await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise RegistrationFailed(f"management service {url} unreachable: {exc}") from exc
    try:
        data = json.loads(body)
    except ValueError:
        raise RegistrationFailed(f"management service answered HTTP {resp.status} without JSON") from None
    if resp.status != 202:
        raise RegistrationFailed(f"{data.get('type', 'error')}: {data.get('message', '')}")
    return Submitted(data["id"], data["state"], data["target"])
