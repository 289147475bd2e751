"""Message ids made by the client's gateway: RFC 4122 version-4 UUIDs, unique, in the canonical form."""

from __future__ import annotations

import uuid

from gateway.proxy.client_side import new_id


def test_new_ids_are_canonical_random_v4_uuids() -> None:
    made = [new_id() for _ in range(10_000)]  # more than one 4 KiB randomness pool's worth (256 ids)
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
