"""Message bodies encrypted at rest with AES-256-GCM: key parsing, encryption of log fields, and decryption.

Stored form of an encrypted body: ``b"WB1" || key_id (8) || nonce (12) || AES-GCM ciphertext and tag``, where
``key_id`` is the first 8 bytes of SHA-256("wasl.messagelog.body-key.v1" || key), so a reader can tell which key
it needs (and rotation can keep old keys for reading), and the associated data is the record's body_sha512: the
ciphertext can only decrypt as the very plaintext the record (and the signed manifest) commits to.

The hash chain covers the ciphertext as stored and the plaintext's SHA-512, so chains, tokens and signatures all
verify offline without the key; only reading a body needs it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.messagelog.records import LogFields, LogRecord

MAGIC = b"WB1"
KEY_BYTES = 32
_KEY_ID_TAG = b"wasl.messagelog.body-key.v1"
_AAD_TAG = b"wasl.messagelog.body.v1\x00"
_HEADER = len(MAGIC) + 8 + 12


class BodyKeyError(ValueError):
    """A body key that cannot be used, or a body that cannot be decrypted with the keys given."""


@dataclasses.dataclass(frozen=True)
class BodyKey:
    """One AES-256 key for bodies at rest."""

    key: bytes
    key_id: bytes = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise BodyKeyError(f"a body key is {KEY_BYTES} bytes, not {len(self.key)}")
        object.__setattr__(self, "key_id", hashlib.sha256(_KEY_ID_TAG + self.key).digest()[:8])

    @classmethod
    def parse(cls, text: str | bytes, source: str) -> BodyKey:
        """A key written as base64 or hex (64 digits), surrounding whitespace ignored; ``source`` names where it
        came from in errors (never the key itself)."""
        raw = text.decode("ascii", "replace") if isinstance(text, bytes) else text
        raw = raw.strip()
        for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True)):
            try:
                key = decode(raw)
            except (ValueError, binascii.Error):
                continue
            if len(key) == KEY_BYTES:
                return cls(key)
        raise BodyKeyError(f"{source}: not a {KEY_BYTES}-byte key in base64 or hex (make one with wasl log keygen)")

    @classmethod
    def generate(cls) -> BodyKey:
        return cls(AESGCM.generate_key(bit_length=256))

    def text(self) -> str:
        return base64.b64encode(self.key).decode("ascii")


def _aad(body_sha512: bytes) -> bytes:
    return _AAD_TAG + body_sha512


def encrypt_body(key: BodyKey, body: bytes, body_sha512: bytes) -> bytes:
    nonce = os.urandom(12)  # random 96-bit nonces: safe far beyond any gateway's message count for one key
    return MAGIC + key.key_id + nonce + AESGCM(key.key).encrypt(nonce, body, _aad(body_sha512))


def encrypt_fields(key: BodyKey, fields: LogFields) -> LogFields:
    """``fields`` with its body encrypted (fields without a body are returned as they are)."""
    if fields.body is None or fields.body_encrypted:
        return fields
    return dataclasses.replace(fields, body=encrypt_body(key, fields.body, fields.body_sha512), body_encrypted=True)


def key_id_of(ciphertext: bytes) -> bytes | None:
    if len(ciphertext) < _HEADER or not ciphertext.startswith(MAGIC):
        return None
    return ciphertext[len(MAGIC):len(MAGIC) + 8]


def decrypt_body(keys: list[BodyKey], ciphertext: bytes, body_sha512: bytes) -> bytes:
    """The plaintext body; raises BodyKeyError if no key fits or the ciphertext or its binding was altered."""
    key_id = key_id_of(ciphertext)
    if key_id is None:
        raise BodyKeyError("not an encrypted body (bad header)")
    key = next((k for k in keys if k.key_id == key_id), None)
    if key is None:
        raise BodyKeyError(f"encrypted with key id {key_id.hex()}, which is not among the keys given")
    nonce = ciphertext[len(MAGIC) + 8:_HEADER]
    try:
        body = AESGCM(key.key).decrypt(nonce, ciphertext[_HEADER:], _aad(body_sha512))
    except InvalidTag:
        raise BodyKeyError("the encrypted body does not authenticate: altered, or bound to another body") from None
    if hashlib.sha512(body).digest() != body_sha512:
        raise BodyKeyError("the decrypted body does not match body_sha512")
    return body


def plaintext_body(record: LogRecord, keys: list[BodyKey]) -> bytes | None:
    """The record's body in clear: as stored, decrypted, or None when only its hash was kept."""
    if record.body is None:
        return None
    if not record.body_encrypted:
        return record.body
    return decrypt_body(keys, record.body, record.body_sha512)
