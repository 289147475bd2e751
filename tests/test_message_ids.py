"""Message ids made by a gateway: RFC 9562 version-7 UUIDs, unique, canonical, and ordered by their time."""

from __future__ import annotations

import time
import uuid

from gateway.proxy.message_ids import new_id


def test_new_ids_are_canonical_unique_v7_uuids() -> None:
    made = [new_id() for _ in range(10_000)]  # more than one 4 KiB randomness pool's worth (409 ids)
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)


def test_new_ids_carry_their_creation_time_and_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    first = new_id()
    time.sleep(0.003)
    second = new_id()
    after = time.time_ns() // 1_000_000
    stamps = [uuid.UUID(text).int >> 80 for text in (first, second)]  # the top 48 bits: Unix time in ms
    assert before <= stamps[0] < stamps[1] <= after
    assert first < second  # as text too, so an index on the id appends instead of scattering
