"""Merkle trees over record hashes (RFC 6962 shape): the root a timestamp token covers and each record's audit path."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_LEAF = b"\x00"
_NODE = b"\x01"
# An audit path step: the sibling's hash and whether the sibling sits on the left.
Step = tuple[bool, bytes]


def leaf_hash(record_hash: bytes) -> bytes:
    """The leaf for one record; the 0x00/0x01 prefixes keep a leaf from ever passing for an inner node."""
    return hashlib.sha256(_LEAF + record_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _levels(record_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every level, leaves first. Nodes pair up left to right; an unpaired last node moves up unchanged, which
    builds exactly RFC 6962's tree (the left subtree always holds the largest power of two of the leaves)."""
    if not record_hashes:
        raise ValueError("a Merkle tree needs at least one leaf")
    level = [leaf_hash(h) for h in record_hashes]
    levels = [level]
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


def root(record_hashes: Sequence[bytes]) -> bytes:
    """The Merkle root over the record hashes of one batch, in seq order."""
    return _levels(record_hashes)[-1][0]


def audit_path(record_hashes: Sequence[bytes], index: int) -> list[Step]:
    """The siblings that lead from leaf ``index`` to the root: about log2(n) hashes, what a record keeps as proof."""
    if not 0 <= index < len(record_hashes):
        raise IndexError(f"leaf {index} is not in a tree of {len(record_hashes)}")
    path: list[Step] = []
    for level in _levels(record_hashes)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append((sibling < index, level[sibling]))
        index //= 2
    return path


def root_from_path(record_hash: bytes, path: Sequence[Step]) -> bytes:
    """The root that ``record_hash`` and its audit path lead to; equal to the stamped root iff the record is in."""
    node = leaf_hash(record_hash)
    for left, sibling in path:
        node = node_hash(sibling, node) if left else node_hash(node, sibling)
    return node
