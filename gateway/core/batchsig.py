"""Batch signatures: one ECDSA signature over the Merkle root of many manifests, each carrying its proof path.

Under load a gateway signs dozens of messages per event-loop turn. X-Road's signer does the same (its "batch
signatures" over a hash chain): the costly private-key operation, and on the receiving side the costly
verification, happen once per batch instead of once per message. Each message still verifies on its own, offline,
from its manifest, its signature blob and the signer's public key.

Encoding of a batch signature (a plain signature is a DER ECDSA signature, which always starts with 0x30)::

    b"WBS1" | index u32 | count u32 | path_length u8 | path_length * 32-byte sibling hashes | DER ECDSA signature

The ECDSA signature covers ``ROOT_TAG + root``. The leaf hash is SHA-256(0x00 | manifest) and an inner node is
SHA-256(0x01 | left | right), as in RFC 6962, so a leaf can never pass for an inner node. ``ROOT_TAG`` keeps a root
from ever being confused with a manifest: a manifest is JSON and starts with ``{``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

MAGIC = b"WBS1"
ROOT_TAG = b"wasl.batch-signature.v1\x00"
MAX_PATH = 32  # 2**32 leaves; far beyond any batch
_HEADER = struct.Struct(">4sIIB")
_HASH = 32


class BatchSignatureError(ValueError):
    """A batch-signature blob that is malformed (its ECDSA part is checked separately)."""


def leaf_hash(manifest: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + manifest).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree(manifests: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The Merkle root over ``manifests`` and, for each, its sibling path from leaf to root.

    An odd node at the end of a level is promoted unchanged, so no leaf is ever duplicated.
    """
    if not manifests:
        raise ValueError("a batch needs at least one manifest")
    level = [leaf_hash(m) for m in manifests]
    positions = list(range(len(manifests)))  # each leaf's index in the current level
    paths: list[list[bytes]] = [[] for _ in manifests]
    while len(level) > 1:
        for leaf, pos in enumerate(positions):
            sibling = pos ^ 1
            if sibling < len(level):
                paths[leaf].append(level[sibling])
            positions[leaf] = pos // 2
        level = [_node(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0], paths


def signed_bytes(root: bytes) -> bytes:
    """What the private key signs for a batch."""
    return ROOT_TAG + root


def encode(index: int, count: int, path: Sequence[bytes], root_signature: bytes) -> bytes:
    return _HEADER.pack(MAGIC, index, count, len(path)) + b"".join(path) + root_signature


def is_batch(signature: bytes) -> bool:
    return signature[:4] == MAGIC


def _levels(count: int) -> list[int]:
    """The width of each level of a tree over ``count`` leaves, from the leaves up."""
    widths = [count]
    while widths[-1] > 1:
        widths.append((widths[-1] + 1) // 2)
    return widths


def signed_root(manifest: bytes, signature: bytes) -> tuple[bytes, bytes]:
    """(the bytes the ECDSA signature must cover, the DER ECDSA signature) for a batch-signature blob.

    Recomputes the root from the manifest and its path; which sibling sits on which side follows from the
    leaf's index and the batch size, so a path cannot be replayed for another position.
    """
    if len(signature) < _HEADER.size:
        raise BatchSignatureError("batch signature is truncated")
    magic, index, count, path_length = _HEADER.unpack_from(signature)
    if magic != MAGIC or count == 0 or index >= count or path_length > MAX_PATH:
        raise BatchSignatureError("batch signature header is invalid")
    start = _HEADER.size
    end = start + path_length * _HASH
    if len(signature) <= end:
        raise BatchSignatureError("batch signature is truncated")
    node, pos, used = leaf_hash(manifest), index, 0
    for width in _levels(count)[:-1]:
        sibling = pos ^ 1
        if sibling < width:
            if used == path_length:
                raise BatchSignatureError("batch signature path is too short")
            other = signature[start + used * _HASH:start + (used + 1) * _HASH]
            node = _node(other, node) if pos & 1 else _node(node, other)
            used += 1
        pos //= 2
    if used != path_length:
        raise BatchSignatureError("batch signature path is too long")
    return signed_bytes(node), signature[end:]
