"""Batch signatures: one ECDSA signature over a Merkle root, every message verifiable alone."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.core import batchsig, envelope
from gateway.core.envelope import SignedParts, VerifiedSignatures
from gateway.core.faults import Code, Fault, Origin
from gateway.proxy.batchsigner import BatchSigner

KEY = ec.generate_private_key(ec.SECP256R1())
CERT = b"signer-cert-der"


def _signer() -> BatchSigner:
    return BatchSigner(lambda data: envelope.sign_bytes(data, KEY), CERT)


def _manifests(n: int) -> list[bytes]:
    return [b'{"n":%d}' % i for i in range(n)]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100])
def test_every_message_of_a_batch_verifies_alone(count):
    signed = _signer().sign_now(_manifests(count))
    assert len(signed) == count
    assert all(batchsig.is_batch(p.signature) == (count > 1) for p in signed)
    for parts in signed:
        envelope.verify_signature(parts, KEY.public_key(), Origin.SERVER_PROXY)


def test_a_path_does_not_fit_another_manifest_or_position():
    signed = _signer().sign_now(_manifests(5))
    swapped = SignedParts(signed[1].manifest, signed[2].signature, CERT)
    with pytest.raises(Fault) as exc:
        envelope.verify_signature(swapped, KEY.public_key(), Origin.SERVER_PROXY)
    assert exc.value.code is Code.INVALID_SIGNATURE_VALUE
    tampered = SignedParts(b'{"n":9}', signed[0].signature, CERT)
    with pytest.raises(Fault):
        envelope.verify_signature(tampered, KEY.public_key(), Origin.SERVER_PROXY)


def test_a_batch_signature_from_another_key_fails():
    other = ec.generate_private_key(ec.SECP256R1())
    signed = BatchSigner(lambda data: envelope.sign_bytes(data, other), CERT).sign_now(_manifests(3))
    with pytest.raises(Fault) as exc:
        envelope.verify_signature(signed[0], KEY.public_key(), Origin.CLIENT_PROXY)
    assert exc.value.code is Code.INVALID_SIGNATURE_VALUE


@pytest.mark.parametrize("mangle", [
    lambda s: s[:10],  # truncated header
    lambda s: s[:14],  # header, no signature
    lambda s: s[:4] + (99).to_bytes(4, "big") + s[8:],  # index beyond the batch
    lambda s: s[:12] + bytes([s[12] + 1]) + s[13:],  # path longer than the batch needs
    lambda s: s[:12] + bytes([s[12] - 1]) + s[13:],  # path shorter
])
def test_a_malformed_batch_signature_is_a_clear_fault(mangle):
    parts = _signer().sign_now(_manifests(6))[3]
    bad = SignedParts(parts.manifest, mangle(parts.signature), CERT)
    with pytest.raises(Fault) as exc:
        envelope.verify_signature(bad, KEY.public_key(), Origin.SERVER_PROXY)
    assert exc.value.code in (Code.MALFORMED_SIGNATURE, Code.INVALID_SIGNATURE_VALUE)


def test_verified_roots_are_remembered_but_never_trusted_for_another_manifest():
    signed = _signer().sign_now(_manifests(4))
    memo = VerifiedSignatures()
    for parts in signed:
        envelope.verify_signature(parts, KEY.public_key(), Origin.SERVER_PROXY, memo)
    assert len(memo._seen) == 1  # one root, verified once
    forged = SignedParts(b'{"n":"forged"}', signed[0].signature, CERT)
    with pytest.raises(Fault):
        envelope.verify_signature(forged, KEY.public_key(), Origin.SERVER_PROXY, memo)


async def test_signs_requested_in_one_loop_turn_share_one_signature():
    signer = _signer()
    signed = await asyncio.gather(*(signer.sign(m) for m in _manifests(10)))
    roots = {envelope.signed_content(p) for p in signed}
    assert len(roots) == 1
    assert [p.manifest for p in signed] == _manifests(10)
    lone = await signer.sign(b'{"lone":1}')
    assert not batchsig.is_batch(lone.signature)
    envelope.verify_signature(lone, KEY.public_key(), Origin.SERVER_PROXY)


async def test_a_failing_key_fails_every_caller_of_the_batch():
    def broken(data: bytes) -> bytes:
        raise RuntimeError("token removed")

    signer = BatchSigner(broken, CERT)
    results = await asyncio.gather(*(signer.sign(m) for m in _manifests(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_sign_then_delivers_from_inside_the_flush_and_signs_early_once_enough_wait():
    from gateway.proxy.batchsigner import EARLY_FLUSH

    signer = _signer()
    delivered: list[SignedParts] = []
    for manifest in _manifests(EARLY_FLUSH - 1):
        signer.sign_then(manifest, delivered.append)
    assert delivered == []  # still gathering: the turn has not ended
    signer.sign_then(b'{"last":1}', delivered.append)
    # The batch was signed on the spot, without the loop turning, so its frames can leave at once.
    assert [p.manifest for p in delivered] == [*_manifests(EARLY_FLUSH - 1), b'{"last":1}']
    assert len({envelope.signed_content(p) for p in delivered}) == 1
    for parts in delivered:
        envelope.verify_signature(parts, KEY.public_key(), Origin.SERVER_PROXY)
    # Fewer than that are signed when the turn ends, together with awaited ones.
    later: list[SignedParts] = []
    signer.sign_then(b'{"a":1}', later.append)
    awaited = await signer.sign(b'{"b":2}')
    assert [p.manifest for p in later] == [b'{"a":1}']
    assert envelope.signed_content(later[0]) == envelope.signed_content(awaited)


async def test_sign_then_gets_the_failure_and_one_broken_callback_does_not_starve_the_rest():
    def broken(data: bytes) -> bytes:
        raise RuntimeError("token removed")

    outcomes: list[object] = []
    signer = BatchSigner(broken, CERT)
    signer.sign_then(b"{}", outcomes.append)
    signer.sign_then(b"{}", outcomes.append)
    await asyncio.sleep(0)
    assert len(outcomes) == 2 and all(isinstance(o, RuntimeError) for o in outcomes)

    def raising(outcome: object) -> None:
        raise ValueError("bug in a caller")

    good: list[SignedParts] = []
    signer = _signer()
    signer.sign_then(b'{"x":1}', raising)
    signer.sign_then(b'{"y":2}', good.append)
    await asyncio.sleep(0)
    assert [p.manifest for p in good] == [b'{"y":2}']
