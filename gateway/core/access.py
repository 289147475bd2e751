"""Access-rights decisions: may this client call this service (or this REST endpoint of it)? Default deny; the
service version is ignored."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from gateway.core.faults import Code, Fault, Origin


@dataclass(frozen=True, slots=True)
class AccessRule:
    """One grant: a subsystem, a whole member, or a global group, in typed form (``SUBSYSTEM:...``)."""

    kind: str  # "SUBSYSTEM", "MEMBER" or "GLOBALGROUP"
    path: str

    def matches(self, client_path: str, groups: frozenset[str], instance: str) -> bool:
        if self.kind == "SUBSYSTEM":
            return client_path == self.path
        if self.kind == "MEMBER":
            return client_path == self.path or client_path.startswith(self.path + "/")
        # GLOBALGROUP: INST/groupCode
        group_instance, _, code = self.path.partition("/")
        return group_instance == instance and code in groups


def is_allowed(rules: tuple[AccessRule, ...], client_path: str, groups: frozenset[str], instance: str) -> bool:
    return any(rule.matches(client_path, groups, instance) for rule in rules)


def check_access(rules: tuple[AccessRule, ...], client_path: str, service_path: str, groups: frozenset[str],
                 instance: str) -> None:
    """Raise ``Server.ServerProxy.AccessDenied`` unless a rule grants the call."""
    if not is_allowed(rules, client_path, groups, instance):
        raise Fault(Origin.SERVER_PROXY, Code.ACCESS_DENIED,
                    f"Request not allowed: {client_path} has no access right to service {service_path}")


@dataclass(frozen=True, slots=True)
class EndpointRule:
    """Rights to one REST endpoint of a service, as X-Road's: a method (or ``*``) and a path pattern where
    ``{name}`` or ``*`` stands for one path segment and ``**`` for any rest of the path."""

    method: str
    path: str
    rules: tuple[AccessRule, ...]

    def covers(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and _endpoint_pattern(self.path).fullmatch(path or "/") is not None


@lru_cache(maxsize=512)
def _endpoint_pattern(path: str) -> re.Pattern[str]:
    parts = []
    for segment in re.split(r"(\*\*|\*|\{[^/{}]*\})", path):
        if segment == "**":
            parts.append(".*")
        elif segment == "*" or (segment.startswith("{") and segment.endswith("}")):
            parts.append("[^/]+")
        else:
            parts.append(re.escape(segment))
    return re.compile("".join(parts))


def endpoint_allowed(service_rules: tuple[AccessRule, ...], endpoints: Sequence[EndpointRule], method: str,
                     path: str, client_path: str, groups: frozenset[str], instance: str) -> bool:
    """A right to the service covers all its endpoints; a right to an endpoint covers that endpoint only."""
    if is_allowed(service_rules, client_path, groups, instance):
        return True
    return any(e.covers(method, path) and is_allowed(e.rules, client_path, groups, instance) for e in endpoints)


def check_endpoint_access(service_rules: tuple[AccessRule, ...], endpoints: Sequence[EndpointRule], method: str,
                          path: str, client_path: str, service_path: str, groups: frozenset[str],
                          instance: str) -> None:
    """Raise ``Server.ServerProxy.AccessDenied`` unless the service or a matching endpoint grants the call."""
    if not endpoint_allowed(service_rules, endpoints, method, path, client_path, groups, instance):
        raise Fault(Origin.SERVER_PROXY, Code.ACCESS_DENIED,
                    f"Request not allowed: {client_path} has no access right to {method} {path or '/'} of service "
                    f"{service_path}")
