"""X-Road identifiers: path and typed forms parse and format back, and bad input is refused naming the bad part."""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import identifiers as ids
from gateway.core.identifiers import (
    GlobalGroupId,
    IdentifierError,
    MemberId,
    ObjectType,
    ServerId,
    ServiceId,
    SubsystemId,
)

# -- path forms ---------------------------------------------------------------------------------------------------


def test_member_path_round_trip() -> None:
    member = ids.parse_member("DEMO/GOV/1001")
    assert member == MemberId("DEMO", "GOV", "1001")
    assert member.path() == "DEMO/GOV/1001"
    assert str(member) == "MEMBER:DEMO/GOV/1001"
    assert member.object_type is ObjectType.MEMBER
    assert member.member is member


def test_subsystem_path_round_trip() -> None:
    sub = ids.parse_subsystem("DEMO/GOV/1001/population")
    assert sub == SubsystemId("DEMO", "GOV", "1001", "population")
    assert sub.path() == "DEMO/GOV/1001/population"
    assert str(sub) == "SUBSYSTEM:DEMO/GOV/1001/population"
    assert sub.object_type is ObjectType.SUBSYSTEM
    assert sub.member == MemberId("DEMO", "GOV", "1001")


def test_client_is_member_or_subsystem_by_part_count() -> None:
    assert ids.parse_client("DEMO/GOV/1001") == MemberId("DEMO", "GOV", "1001")
    assert ids.parse_client("DEMO/GOV/1001/population") == SubsystemId("DEMO", "GOV", "1001", "population")


def test_versioned_service() -> None:
    service = ids.parse_service("DEMO/GOV/1001/population/getPerson/v1")
    assert service == ServiceId("DEMO", "GOV", "1001", "population", "getPerson", "v1")
    assert service.service_version == "v1"
    assert service.path() == "DEMO/GOV/1001/population/getPerson/v1"
    assert str(service) == "SERVICE:DEMO/GOV/1001/population/getPerson/v1"
    assert service.provider == SubsystemId("DEMO", "GOV", "1001", "population")
    assert service.member == MemberId("DEMO", "GOV", "1001")
    assert service.object_type is ObjectType.SERVICE


def test_unversioned_service() -> None:
    service = ids.parse_service("DEMO/GOV/1001/population/getPerson")
    assert service.service_version is None
    assert service.path() == "DEMO/GOV/1001/population/getPerson"
    assert ids.parse_service("DEMO/GOV/1001/population/getPerson", with_version=False) == service


def test_unversioned_drops_only_the_version() -> None:
    versioned = ids.parse_service("DEMO/GOV/1001/population/getPerson/v1")
    plain = versioned.unversioned()
    assert plain == ids.parse_service("DEMO/GOV/1001/population/getPerson")
    assert plain.service_version is None
    assert (plain.instance, plain.member_class, plain.member_code, plain.subsystem_code, plain.service_code) == (
        "DEMO", "GOV", "1001", "population", "getPerson")
    assert versioned.service_version == "v1"  # the original is untouched
    assert plain.unversioned() is plain
    # v1 and v2 of one service share one access-rights key
    v2 = ids.parse_service("DEMO/GOV/1001/population/getPerson/v2")
    assert v2 != versioned
    assert {versioned.unversioned(): "rights"}[v2.unversioned()] == "rights"


def test_member_level_service() -> None:
    service = ServiceId("DEMO", "GOV", "1001", None, "getPerson", "v1")
    assert service.path() == "DEMO/GOV/1001/getPerson/v1"
    assert service.provider == MemberId("DEMO", "GOV", "1001")
    assert service.unversioned().path() == "DEMO/GOV/1001/getPerson"


def test_server_and_global_group() -> None:
    server = ids.parse_server("DEMO/GOV/1001/gw-civil")
    assert server == ServerId("DEMO", "GOV", "1001", "gw-civil")
    assert server.owner == MemberId("DEMO", "GOV", "1001")
    assert str(server) == "SERVER:DEMO/GOV/1001/gw-civil"
    group = ids.parse_global_group("DEMO/trusted-agencies")
    assert group == GlobalGroupId("DEMO", "trusted-agencies")
    assert group.path() == "DEMO/trusted-agencies"
    assert str(group) == "GLOBALGROUP:DEMO/trusted-agencies"
    assert group.object_type is ObjectType.GLOBALGROUP


def test_every_allowed_character_is_accepted() -> None:
    odd = "a-Z.0'()+,=?"
    assert ids.parse_subsystem(f"DEMO/GOV/{odd}/sub").member_code == odd


def test_identifiers_are_immutable_and_hashable() -> None:
    member = ids.parse_member("DEMO/GOV/1001")
    with pytest.raises(dataclasses.FrozenInstanceError):
        member.member_code = "1002"  # type: ignore[misc]
    assert len({member, MemberId("DEMO", "GOV", "1001")}) == 1


# -- typed forms --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("MEMBER:DEMO/GOV/1001", MemberId("DEMO", "GOV", "1001")),
    ("SUBSYSTEM:DEMO/GOV/1001/population", SubsystemId("DEMO", "GOV", "1001", "population")),
    ("SERVICE:DEMO/GOV/1001/population/getPerson", ServiceId("DEMO", "GOV", "1001", "population", "getPerson")),
    ("SERVICE:DEMO/GOV/1001/population/getPerson/v1",
     ServiceId("DEMO", "GOV", "1001", "population", "getPerson", "v1")),
    ("SERVER:DEMO/GOV/1001/gw-civil", ServerId("DEMO", "GOV", "1001", "gw-civil")),
    ("GLOBALGROUP:DEMO/trusted", GlobalGroupId("DEMO", "trusted")),
])
def test_typed_form_round_trip(text: str, expected: ids.AnyId) -> None:
    parsed = ids.parse_typed(text)
    assert parsed == expected
    assert type(parsed) is type(expected)
    assert str(parsed) == text
    assert parsed.object_type.value == text.partition(":")[0]


@pytest.mark.parametrize("text", [
    "DEMO/GOV/1001",  # no type
    "member:DEMO/GOV/1001",  # types are upper case
    "LOCALGROUP:DEMO/group",  # not a type this gateway parses
    ":DEMO/GOV/1001",
    "",
])
def test_typed_form_needs_a_known_type(text: str) -> None:
    with pytest.raises(IdentifierError, match="must start with one of MEMBER, SUBSYSTEM, SERVICE, SERVER, GLOBALGROUP"):
        ids.parse_typed(text)


@pytest.mark.parametrize(("text", "what"), [
    ("MEMBER:DEMO/GOV/1001/population", "member id"),
    ("SUBSYSTEM:DEMO/GOV/1001", "subsystem id"),
    ("SERVICE:DEMO/GOV/1001/population", "service id"),
    ("SERVER:DEMO/GOV/1001", "server id"),
    ("GLOBALGROUP:DEMO/GOV/trusted", "global group id"),
])
def test_typed_form_with_wrong_part_count(text: str, what: str) -> None:
    with pytest.raises(IdentifierError, match=what):
        ids.parse_typed(text)


# -- invalid input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("parser", "text", "expected"), [
    (ids.parse_member, "DEMO/GOV", "must have 3 '/'-separated parts, not 2"),
    (ids.parse_member, "DEMO/GOV/1001/population", "must have 3 '/'-separated parts, not 4"),
    (ids.parse_subsystem, "DEMO/GOV/1001", "must have 4 '/'-separated parts, not 3"),
    (ids.parse_subsystem, "DEMO/GOV/1001/a/b", "must have 4 '/'-separated parts, not 5"),
    (ids.parse_client, "DEMO/GOV", "must have 3 or 4 '/'-separated parts, not 2"),
    (ids.parse_client, "DEMO/GOV/1001/population/x", "must have 3 or 4 '/'-separated parts, not 5"),
    (ids.parse_service, "DEMO/GOV/1001/population", "must have 5 or 6 '/'-separated parts, not 4"),
    (ids.parse_service, "DEMO/GOV/1001/population/getPerson/v1/x", "must have 5 or 6 '/'-separated parts, not 7"),
    (ids.parse_server, "DEMO/GOV/1001", "must have 4 '/'-separated parts, not 3"),
    (ids.parse_global_group, "DEMO", "must have 2 '/'-separated parts, not 1"),
    (ids.parse_global_group, "DEMO/a/b", "must have 2 '/'-separated parts, not 3"),
])
def test_wrong_part_counts(parser: Callable[[str], object], text: str, expected: str) -> None:
    with pytest.raises(IdentifierError, match=expected):
        parser(text)


def test_version_refused_where_not_wanted() -> None:
    with pytest.raises(IdentifierError, match="must have 5 '/'-separated parts, not 6"):
        ids.parse_service("DEMO/GOV/1001/population/getPerson/v1", with_version=False)


@pytest.mark.parametrize(("parser", "text", "part"), [
    (ids.parse_subsystem, "DEMO/GOV/1001/pop ulation", "subsystemCode"),
    (ids.parse_subsystem, "DEMO/GOV/1001/pop%20ulation", "subsystemCode"),
    (ids.parse_subsystem, "DEMO/GOV/1001/", "subsystemCode"),
    (ids.parse_member, "DE MO/GOV/1001", "xRoadInstance"),
    (ids.parse_member, "/GOV/1001", "xRoadInstance"),
    (ids.parse_member, "DEMO//1001", "memberClass"),
    (ids.parse_member, "DEMO/G:V/1001", "memberClass"),
    (ids.parse_member, "DEMO/GOV/10%01", "memberCode"),
    (ids.parse_member, "DEMO/GOV/1001\\x", "memberCode"),
    (ids.parse_member, "DEMO/GOV/10\x0001", "memberCode"),
    (ids.parse_member, "DEMO/GOV/Ä1001", "memberCode"),
    (ids.parse_member, "DEMO/GOV/١٠٠١", "memberCode"),  # Arabic-Indic digits are not 0-9
    (ids.parse_service, "DEMO/GOV/1001/population/get*Person", "serviceCode"),
    (ids.parse_service, "DEMO/GOV/1001/population/getPerson/v 1", "serviceVersion"),
    (ids.parse_service, "DEMO/GOV/1001/population/getPerson/", "serviceVersion"),
    (ids.parse_server, "DEMO/GOV/1001/gw#1", "serverCode"),
    (ids.parse_global_group, "DEMO/trusted agencies", "groupCode"),
])
def test_illegal_characters_and_empty_parts_name_the_part(parser: Callable[[str], object], text: str,
                                                          part: str) -> None:
    with pytest.raises(IdentifierError) as info:
        parser(text)
    assert str(info.value).startswith(part + " ")


def test_slash_inside_a_part_is_refused() -> None:
    # In path form a '/' just makes one part more; built directly, the part itself is refused.
    with pytest.raises(IdentifierError, match=r"^subsystemCode 'pop/ulation' contains characters"):
        SubsystemId("DEMO", "GOV", "1001", "pop/ulation")
    with pytest.raises(IdentifierError, match="must have 4"):
        ids.parse_subsystem("DEMO/GOV/1001/pop/ulation")


def test_part_length_limit_is_255() -> None:
    assert ids.parse_member("DEMO/GOV/" + "x" * 255).member_code == "x" * 255
    with pytest.raises(IdentifierError, match=r"^memberCode is longer than 255 characters"):
        ids.parse_member("DEMO/GOV/" + "x" * 256)
    with pytest.raises(IdentifierError, match=r"^subsystemCode is longer than 255"):
        ids.parse_subsystem("DEMO/GOV/1001/" + "s" * 256)


def test_missing_part_message() -> None:
    with pytest.raises(IdentifierError, match=r"^serviceCode is missing$"):
        ServiceId("DEMO", "GOV", "1001", "population", "")
    with pytest.raises(IdentifierError, match=r"^xRoadInstance is missing$"):
        ids.check_part("xRoadInstance", None)


def test_non_text_is_refused() -> None:
    with pytest.raises(IdentifierError, match="must be text"):
        ids.parse_member(1001)  # type: ignore[arg-type]


def test_identifier_error_is_a_value_error() -> None:
    assert issubclass(IdentifierError, ValueError)


@pytest.mark.parametrize("text", ["DEMO/GOV/1001\n", "DEMO\n/GOV/1001", "DEMO/GOV\n/1001"])
def test_trailing_newline_in_a_part_is_refused(text: str) -> None:
    with pytest.raises(IdentifierError):
        ids.parse_member(text)


# -- properties ---------------------------------------------------------------------------------------------------

ALPHABET = string.ascii_letters + string.digits + "'()+,-.=?"
parts = st.one_of(st.text(ALPHABET, min_size=1, max_size=12), st.text(ALPHABET, min_size=250, max_size=255))
members = st.builds(MemberId, parts, parts, parts)
subsystems = st.builds(SubsystemId, parts, parts, parts, parts)
services = st.builds(ServiceId, parts, parts, parts, parts, parts, st.none() | parts)
servers = st.builds(ServerId, parts, parts, parts, parts)
groups = st.builds(GlobalGroupId, parts, parts)


@given(st.one_of(members, subsystems, services, servers, groups))
def test_typed_form_round_trips(identifier: ids.AnyId) -> None:
    assert ids.parse_typed(str(identifier)) == identifier


@given(members)
def test_member_path_round_trips(member: MemberId) -> None:
    assert ids.parse_member(member.path()) == member
    assert ids.parse_client(member.path()) == member


@given(subsystems)
def test_subsystem_path_round_trips(sub: SubsystemId) -> None:
    assert ids.parse_subsystem(sub.path()) == sub
    assert ids.parse_client(sub.path()) == sub
    assert sub.member.path() == "/".join(sub.path().split("/")[:3])


@given(services)
def test_service_path_round_trips(service: ServiceId) -> None:
    assert ids.parse_service(service.path()) == service
    plain = service.unversioned()
    assert plain.service_version is None
    assert ids.parse_service(plain.path(), with_version=False) == plain
    assert plain == dataclasses.replace(service, service_version=None)


@given(servers, groups)
def test_server_and_group_paths_round_trip(server: ServerId, group: GlobalGroupId) -> None:
    assert ids.parse_server(server.path()) == server
    assert ids.parse_global_group(group.path()) == group


_illegal = st.characters(codec="utf-8").filter(lambda c: c not in ALPHABET and c != "/")
_PART_NAMES = ("xRoadInstance", "memberClass", "memberCode", "subsystemCode")


@settings(max_examples=200)
@given(st.sampled_from(range(4)), st.text(ALPHABET, max_size=5), _illegal, st.text(ALPHABET, max_size=5))
def test_any_illegal_character_is_refused_naming_its_part(index: int, before: str, bad: str, after: str) -> None:
    values = ["DEMO", "GOV", "1001", "population"]
    values[index] = before + bad + after
    with pytest.raises(IdentifierError) as info:
        ids.parse_subsystem("/".join(values))
    assert str(info.value).startswith(_PART_NAMES[index] + " ")


@given(st.sampled_from(range(4)), st.integers(256, 600))
def test_any_overlong_part_is_refused_naming_its_part(index: int, length: int) -> None:
    values = ["DEMO", "GOV", "1001", "population"]
    values[index] = "x" * length
    with pytest.raises(IdentifierError, match=f"^{_PART_NAMES[index]} is longer than 255"):
        ids.parse_subsystem("/".join(values))
