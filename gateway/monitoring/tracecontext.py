"""W3C Trace Context: accept a caller's valid ``traceparent`` unchanged, or start a new trace when there is none."""

from __future__ import annotations

import random
import re
import time
from typing import Any

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\s]*)?$")
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_rng = random.Random()  # trace ids need uniqueness, not secrecy; os.urandom per request shows in profiles


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex trace id of a valid ``traceparent`` (W3C Trace Context level 1), else None."""
    if not traceparent or len(traceparent) > 512:
        return None
    m = _TRACEPARENT.match(traceparent.strip())
    if m is None:
        return None
    version, trace_id, parent_id, _flags, rest = m.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    if version == "00" and rest:
        return None  # version 00 has exactly four fields
    return trace_id


def is_trace_id(text: str) -> bool:
    return bool(_TRACE_ID.match(text)) and text != _ZERO_TRACE


def new_traceparent() -> str:
    """A fresh, sampled traceparent: version 00, a time-prefixed trace id and a random parent id.

    The trace id is 48 bits of Unix time in milliseconds, then 80 random bits. The specification allows a
    time-based part beside a random one, and level 2's rule (the right-most 7 bytes random) holds too. Ordered
    ids keep the operational store's trace-id index append-only: random ones dirtied a random index page per
    record (SQLite op store, 200-row commits: ~14-16 -> ~8-9 us of CPU per record)."""
    trace = f"{time.time_ns() // 1_000_000:012x}{_rng.getrandbits(80):020x}"
    parent = f"{_rng.getrandbits(64):016x}"
    if trace == _ZERO_TRACE or parent == _ZERO_PARENT:  # astronomically rare, but the spec forbids them
        return new_traceparent()
    return f"00-{trace}-{parent}-01"


def ensure(traceparent: str | None, tracestate: str | None) -> tuple[str, str | None]:
    """The trace context to send on: the caller's own if valid (unchanged, with its tracestate), else a new trace.

    The specification says a receiver that cannot parse ``traceparent`` starts a new trace and drops
    ``tracestate``, which belongs to the trace it could not read."""
    if traceparent is not None and trace_id_of(traceparent) is not None:
        return traceparent, tracestate
    return new_traceparent(), None


def from_headers(headers: Any) -> tuple[str, str | None]:
    """``ensure`` applied to an HTTP request's headers."""
    return ensure(headers.get("traceparent"), headers.get("tracestate"))
