"""Signing with a key held in a PKCS#11 token (python-pkcs11), one worker thread serialising every token call.

The key never leaves the token. The SHA-256 digest is computed here and the token signs it with plain CKM_ECDSA
(SoftHSM2 refuses CKM_ECDSA_SHA256); the token's raw r||s is converted to the DER form the rest of the gateway uses.
Two threads in one token session crashed the process in our trials, so a single-thread executor owns the session:
every call, from opening to signing, runs there. Batch signing (gateway/proxy/batchsigner.py) makes one token call
cover many messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key

from gateway.configfile import ConfigError
from gateway.core.settings import Pkcs11Key


class Pkcs11Error(RuntimeError):
    """The token could not be opened or could not sign; the message never contains the PIN."""


def read_pin(settings: Pkcs11Key) -> str:
    """The user PIN from the environment variable or the file the configuration names."""
    if settings.pin_env is not None:
        pin = os.environ.get(settings.pin_env)
        if not pin:
            raise ConfigError(f"pkcs11.pin_env: the environment variable {settings.pin_env} is not set")
        return pin
    assert settings.pin_file is not None
    try:
        return Path(settings.pin_file).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"pkcs11.pin_file: cannot read {settings.pin_file}: {exc.strerror}") from None


class Pkcs11Signer:
    """A session on one token, and one private key in it, driven from a single worker thread."""

    def __init__(self, settings: Pkcs11Key) -> None:
        self.settings = settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pkcs11")
        self._session: Any = None
        self._key: Any = None
        pin = read_pin(settings)
        self._executor.submit(self._open, pin).result()

    def _open(self, pin: str) -> None:
        import pkcs11
        from pkcs11 import ObjectClass

        try:
            lib = pkcs11.lib(str(self.settings.module))
            token = lib.get_token(token_label=self.settings.token_label)
            self._session = token.open(user_pin=pin)
            self._key = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=self.settings.key_label)
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            if self._session is not None:  # a half-open session would keep the token logged in
                self._session.close()
                self._session = None
            # Name what failed, never the PIN.
            raise Pkcs11Error(f"PKCS#11 token {self.settings.token_label!r}, key {self.settings.key_label!r}: "
                              f"{exc.__class__.__name__}") from None

    def _sign_in_thread(self, data: bytes) -> bytes:
        from pkcs11 import Mechanism

        raw = self._key.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA)
        half = len(raw) // 2
        return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    async def sign(self, data: bytes) -> bytes:
        """A DER ECDSA P-256/SHA-256 signature over ``data``, made in the token."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._sign_in_thread, data)

    def sign_blocking(self, data: bytes) -> bytes:
        return self._executor.submit(self._sign_in_thread, data).result()

    def close(self) -> None:
        def close_session() -> None:
            if self._session is not None:
                self._session.close()

        self._executor.submit(close_session).result()
        self._executor.shutdown()


def generate_key(settings: Pkcs11Key) -> ec.EllipticCurvePublicKey:
    """Create a P-256 key pair in the token under ``settings.key_label``; return its public key."""
    import pkcs11
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

    pin = read_pin(settings)

    def generate() -> ec.EllipticCurvePublicKey:
        lib = pkcs11.lib(str(settings.module))
        token = lib.get_token(token_label=settings.token_label)
        with token.open(user_pin=pin, rw=True) as session:
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
            public, _ = params.generate_keypair(store=True, label=settings.key_label)
            key = load_der_public_key(encode_ec_public_key(public))
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise Pkcs11Error("the token did not return an EC public key")
        return key

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pkcs11") as one:
        try:
            return one.submit(generate).result()
        except pkcs11.PKCS11Error as exc:
            raise Pkcs11Error(f"PKCS#11 token {settings.token_label!r}: cannot create key "
                              f"{settings.key_label!r}: {exc.__class__.__name__}") from None
