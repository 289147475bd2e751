"""X-Road identifiers (member, subsystem, service, server, global group): parse, format and validate."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

# PR-MESS §2.7: the only characters an identifier part may hold.
_PART = re.compile(r"[A-Za-z0-9'()+,\-.=?]+")  # used with fullmatch: '$' would let a trailing newline in
_MAX_PART = 255


class IdentifierError(ValueError):
    """An identifier that does not follow X-Road's rules; the message names the bad part."""


class ObjectType(StrEnum):
    MEMBER = "MEMBER"
    SUBSYSTEM = "SUBSYSTEM"
    SERVICE = "SERVICE"
    SERVER = "SERVER"
    GLOBALGROUP = "GLOBALGROUP"


def check_part(name: str, value: str | None) -> str:
    """Return ``value`` if it is a valid identifier part, else raise naming the part."""
    if value is None or value == "":
        raise IdentifierError(f"{name} is missing")
    if len(value) > _MAX_PART:
        raise IdentifierError(f"{name} is longer than {_MAX_PART} characters")
    if not _PART.fullmatch(value):
        raise IdentifierError(f"{name} {value!r} contains characters outside A-Z a-z 0-9 ' ( ) + , - . = ?")
    return value


@dataclass(frozen=True, slots=True)
class MemberId:
    instance: str
    member_class: str
    member_code: str

    def __post_init__(self) -> None:
        check_part("xRoadInstance", self.instance)
        check_part("memberClass", self.member_class)
        check_part("memberCode", self.member_code)

    @property
    def object_type(self) -> ObjectType:
        return ObjectType.MEMBER

    @property
    def member(self) -> MemberId:
        return self

    def path(self) -> str:
        return f"{self.instance}/{self.member_class}/{self.member_code}"

    def __str__(self) -> str:
        return f"MEMBER:{self.path()}"


@dataclass(frozen=True, slots=True)
class SubsystemId:
    instance: str
    member_class: str
    member_code: str
    subsystem_code: str

    def __post_init__(self) -> None:
        check_part("xRoadInstance", self.instance)
        check_part("memberClass", self.member_class)
        check_part("memberCode", self.member_code)
        check_part("subsystemCode", self.subsystem_code)

    @property
    def object_type(self) -> ObjectType:
        return ObjectType.SUBSYSTEM

    @property
    def member(self) -> MemberId:
        return _member(self.instance, self.member_class, self.member_code)

    def path(self) -> str:
        return f"{self.instance}/{self.member_class}/{self.member_code}/{self.subsystem_code}"

    def __str__(self) -> str:
        return f"SUBSYSTEM:{self.path()}"


ClientId = MemberId | SubsystemId


@lru_cache(maxsize=4096)
def _member(instance: str, member_class: str, member_code: str) -> MemberId:
    return MemberId(instance, member_class, member_code)


@dataclass(frozen=True, slots=True)
class ServiceId:
    """A service of a subsystem; X-Road also allows member-level services (subsystem_code None)."""

    instance: str
    member_class: str
    member_code: str
    subsystem_code: str | None
    service_code: str
    service_version: str | None = None

    def __post_init__(self) -> None:
        check_part("xRoadInstance", self.instance)
        check_part("memberClass", self.member_class)
        check_part("memberCode", self.member_code)
        if self.subsystem_code is not None:
            check_part("subsystemCode", self.subsystem_code)
        check_part("serviceCode", self.service_code)
        if self.service_version is not None:
            check_part("serviceVersion", self.service_version)

    @property
    def object_type(self) -> ObjectType:
        return ObjectType.SERVICE

    @property
    def provider(self) -> ClientId:
        if self.subsystem_code is None:
            return MemberId(self.instance, self.member_class, self.member_code)
        return SubsystemId(self.instance, self.member_class, self.member_code, self.subsystem_code)

    @property
    def member(self) -> MemberId:
        return _member(self.instance, self.member_class, self.member_code)

    def unversioned(self) -> ServiceId:
        """Access rights ignore the version (PR-MESS), so rights are keyed by this form."""
        if self.service_version is None:
            return self
        return ServiceId(self.instance, self.member_class, self.member_code, self.subsystem_code,
                         self.service_code, None)

    def path(self) -> str:
        parts = [self.instance, self.member_class, self.member_code]
        if self.subsystem_code is not None:
            parts.append(self.subsystem_code)
        parts.append(self.service_code)
        if self.service_version is not None:
            parts.append(self.service_version)
        return "/".join(parts)

    def __str__(self) -> str:
        return f"SERVICE:{self.path()}"


@dataclass(frozen=True, slots=True)
class ServerId:
    """A gateway (security server), owned by a member."""

    instance: str
    member_class: str
    member_code: str
    server_code: str

    def __post_init__(self) -> None:
        check_part("xRoadInstance", self.instance)
        check_part("memberClass", self.member_class)
        check_part("memberCode", self.member_code)
        check_part("serverCode", self.server_code)

    @property
    def object_type(self) -> ObjectType:
        return ObjectType.SERVER

    @property
    def owner(self) -> MemberId:
        return _member(self.instance, self.member_class, self.member_code)

    def path(self) -> str:
        return f"{self.instance}/{self.member_class}/{self.member_code}/{self.server_code}"

    def __str__(self) -> str:
        return f"SERVER:{self.path()}"


@dataclass(frozen=True, slots=True)
class GlobalGroupId:
    instance: str
    group_code: str

    def __post_init__(self) -> None:
        check_part("xRoadInstance", self.instance)
        check_part("groupCode", self.group_code)

    @property
    def object_type(self) -> ObjectType:
        return ObjectType.GLOBALGROUP

    def path(self) -> str:
        return f"{self.instance}/{self.group_code}"

    def __str__(self) -> str:
        return f"GLOBALGROUP:{self.path()}"


AnyId = MemberId | SubsystemId | ServiceId | ServerId | GlobalGroupId


def _split(text: str, what: str, lengths: tuple[int, ...]) -> list[str]:
    if not isinstance(text, str):
        raise IdentifierError(f"{what} must be text")
    parts = text.split("/")
    if len(parts) not in lengths:
        shapes = " or ".join(str(n) for n in lengths)
        raise IdentifierError(f"{what} {text!r} must have {shapes} '/'-separated parts, not {len(parts)}")
    return parts


@lru_cache(maxsize=4096)  # identifiers are immutable and every message repeats the same few
def parse_member(text: str) -> MemberId:
    """Parse ``INST/CLASS/CODE``."""
    return MemberId(*_split(text, "member id", (3,)))


@lru_cache(maxsize=4096)
def parse_subsystem(text: str) -> SubsystemId:
    """Parse ``INST/CLASS/CODE/SUBSYSTEM``."""
    return SubsystemId(*_split(text, "subsystem id", (4,)))


@lru_cache(maxsize=4096)
def parse_client(text: str) -> ClientId:
    """Parse a client in path form: a member (3 parts) or a subsystem (4 parts)."""
    parts = _split(text, "client id", (3, 4))
    return MemberId(*parts) if len(parts) == 3 else SubsystemId(*parts)


@lru_cache(maxsize=4096)
def parse_service(text: str, *, with_version: bool = True) -> ServiceId:
    """Parse ``INST/CLASS/CODE/SUBSYSTEM/serviceCode[/version]``; subsystem services only."""
    parts = _split(text, "service id", (5, 6) if with_version else (5,))
    version = parts[5] if len(parts) == 6 else None
    return ServiceId(parts[0], parts[1], parts[2], parts[3], parts[4], version)


@lru_cache(maxsize=4096)
def parse_server(text: str) -> ServerId:
    """Parse ``INST/CLASS/CODE/serverCode``."""
    return ServerId(*_split(text, "server id", (4,)))


@lru_cache(maxsize=4096)
def parse_global_group(text: str) -> GlobalGroupId:
    """Parse ``INST/groupCode``."""
    return GlobalGroupId(*_split(text, "global group id", (2,)))


_PARSERS = {
    "MEMBER": parse_member,
    "SUBSYSTEM": parse_subsystem,
    "SERVICE": parse_service,
    "SERVER": parse_server,
    "GLOBALGROUP": parse_global_group,
}


@lru_cache(maxsize=4096)
def parse_typed(text: str) -> AnyId:
    """Parse the typed form ``TYPE:path``, e.g. ``SUBSYSTEM:EE/GOV/123/sub``."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in _PARSERS:
        raise IdentifierError(f"identifier {text!r} must start with one of {', '.join(_PARSERS)} and ':'")
    parser: Callable[[str], AnyId] = _PARSERS[kind]  # type: ignore[assignment]
    return parser(rest)
