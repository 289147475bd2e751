"""Choosing which of a provider's gateways to try first: healthy ones first, recently failed ones last."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.globalconf import Gateway


@dataclass(slots=True)
class PeerHealth:
    consecutive_failures: int = 0
    last_failure: float = 0.0  # monotonic seconds

    def record_success(self) -> None:
        self.consecutive_failures = 0

    def record_failure(self, now: float) -> None:
        self.consecutive_failures += 1
        self.last_failure = now


def order_gateways(gateways: tuple[Gateway, ...], health: dict[str, PeerHealth], now: float,
                   cooldown_seconds: float = 30.0, target_server: str | None = None) -> list[Gateway]:
    """Gateways to try, in order. A gateway that failed within the cool-down goes to the back, so traffic
    fails over without giving up on it; the configuration's order breaks ties. ``target_server`` (X-Road's
    securityServer header) narrows the choice to one node."""
    if target_server is not None:
        return [gw for gw in gateways if gw.server == target_server]

    def rank(indexed: tuple[int, Gateway]) -> tuple[int, int, int]:
        index, gw = indexed
        state = health.get(gw.address)
        if state is None or state.consecutive_failures == 0:
            return (0, 0, index)
        recent = now - state.last_failure < cooldown_seconds
        return (1 if recent else 0, state.consecutive_failures if recent else 0, index)

    return [gw for _, gw in sorted(enumerate(gateways), key=rank)]
