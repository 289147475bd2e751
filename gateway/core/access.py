"""Access-rights decisions: may this client call this service? Default deny; the service version is ignored."""

from __future__ import annotations

from dataclasses import dataclass

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
