"""Sharper refusals over the real management API: a duplicate from the member's own gateway, and a sign certificate
from a CA the federation does not approve; each is refused with its reason, audited, and changes nothing."""

from __future__ import annotations

from pathlib import Path

from gateway.audit.trail import AuditTrail
from gateway.configfile import load_model
from gateway.core import identifiers as ids
from gateway.core import registration as reg
from gateway.core.settings import GatewaySettings
from gateway.onboarding.client import build
from gateway.trust.pki import CertificateAuthority, new_key
from tests.test_onboarding import federation_state, federation_with_management, new_agency, post_raw

__all__ = ["federation_with_management"]  # the fixture, shared with tests/test_onboarding.py


async def test_a_duplicate_from_the_members_own_gateway_is_refused_as_a_duplicate(federation_with_management) -> None:
    f = federation_with_management
    civil = load_model(f.layout.gateway_files["civil"], GatewaySettings)  # DEMO/GOV/1001's gateway and sign key
    before = federation_state(f)
    # Sent by the member's own gateway and signed by its own key: only the duplicate check can refuse these.
    error = await post_raw(f, civil, build(civil, reg.Kind.REGISTER_MEMBER, member_name="Civil Registry Agency"))
    assert error is not None and "member DEMO/GOV/1001 is already registered" in str(error)
    error = await post_raw(f, civil, build(civil, reg.Kind.REGISTER_SUBSYSTEM, subsystem="population"))
    assert error is not None and "subsystem DEMO/GOV/1001/population is already registered" in str(error)
    error = await post_raw(f, civil, build(civil, reg.Kind.REGISTER_GATEWAY, address="https://127.0.0.1:1"))
    assert error is not None and "gateway DEMO/GOV/1001/gw-civil is already registered" in str(error)
    assert federation_state(f) == before
    trail = AuditTrail(f.layout.directory / "registry-state" / "audit.jsonl")
    refused = [e for e in trail.entries() if e.action == "registration.submit" and e.result == "refused"]
    assert len(refused) == 3


async def test_a_request_signed_under_an_unapproved_ca_is_refused(federation_with_management, tmp_path: Path) -> None:
    f = federation_with_management
    new = await new_agency(f, tmp_path)
    settings = load_model(new / "gateway.yaml", GatewaySettings)
    before = federation_state(f)
    rogue = CertificateAuthority.create("Rogue CA")
    key = new_key()
    cert = rogue.issue_sign_certificate(ids.parse_member("DEMO/GOV/1004"), "Social Insurance", key.public_key())
    forged = reg.sign(reg.new_request(reg.Kind.REGISTER_MEMBER, "DEMO/GOV/1004", member_name="Social Insurance"),
                      key, cert)
    error = await post_raw(f, settings, forged)
    assert error is not None and "sign certificate not trusted" in str(error)
    assert federation_state(f) == before
