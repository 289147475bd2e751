"""Access rights (default deny), the order gateways are tried in, and configuration files refused precisely."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.configfile import MAX_CONFIG_BYTES, ConfigError, load_model
from gateway.core.access import AccessRule, check_access, is_allowed
from gateway.core.faults import Fault
from gateway.core.globalconf import Gateway
from gateway.core.routing import PeerHealth, order_gateways
from gateway.core.settings import FederationConfig, GatewaySettings

SERVICE = "DEMO/GOV/1001/population/getPerson/v1"

# -- access rights ------------------------------------------------------------------------------------------------


def denied(rules: tuple[AccessRule, ...], client: str, groups: frozenset[str] = frozenset(),
           instance: str = "DEMO") -> Fault:
    with pytest.raises(Fault) as info:
        check_access(rules, client, SERVICE, groups, instance)
    return info.value


def test_default_deny() -> None:
    fault = denied((), "DEMO/GOV/1002/tax-records")
    assert fault.full_code == "Server.ServerProxy.AccessDenied"
    assert fault.http_status == 403
    assert "DEMO/GOV/1002/tax-records" in fault.message and SERVICE in fault.message


def test_subsystem_rule() -> None:
    rules = (AccessRule("SUBSYSTEM", "DEMO/GOV/1002/tax-records"),)
    check_access(rules, "DEMO/GOV/1002/tax-records", SERVICE, frozenset(), "DEMO")
    for other in ("DEMO/GOV/1002/archive", "DEMO/GOV/1002", "DEMO/GOV/1002/tax-records/x", "DEMO/GOV/1002/tax",
                  "DEMO/GOV/1002/tax-records2", "OTHER/GOV/1002/tax-records"):
        assert denied(rules, other).full_code == "Server.ServerProxy.AccessDenied", other


def test_member_rule_covers_the_member_and_its_subsystems() -> None:
    rules = (AccessRule("MEMBER", "DEMO/GOV/1003"),)
    for client in ("DEMO/GOV/1003", "DEMO/GOV/1003/patients", "DEMO/GOV/1003/anything"):
        check_access(rules, client, SERVICE, frozenset(), "DEMO")
    for other in ("DEMO/GOV/10033", "DEMO/GOV/10033/patients", "DEMO/GOV/100", "DEMO/GOV/1002/patients",
                  "DEMO/COM/1003"):
        assert denied(rules, other).full_code == "Server.ServerProxy.AccessDenied", other


def test_global_group_rule() -> None:
    rules = (AccessRule("GLOBALGROUP", "DEMO/trusted"),)
    check_access(rules, "DEMO/GOV/1002/tax-records", SERVICE, frozenset({"trusted"}), "DEMO")
    assert denied(rules, "DEMO/GOV/1002/tax-records", frozenset({"other"})).full_code == \
        "Server.ServerProxy.AccessDenied"
    assert denied(rules, "DEMO/GOV/1002/tax-records", frozenset()).full_code == "Server.ServerProxy.AccessDenied"
    # a group of another instance with the same code does not count
    assert denied(rules, "DEMO/GOV/1002/tax-records", frozenset({"trusted"}), instance="OTHER").full_code == \
        "Server.ServerProxy.AccessDenied"
    assert denied((AccessRule("GLOBALGROUP", "OTHER/trusted"),), "DEMO/GOV/1002/tax-records",
                  frozenset({"trusted"})).full_code == "Server.ServerProxy.AccessDenied"


def test_any_rule_may_grant() -> None:
    rules = (AccessRule("SUBSYSTEM", "DEMO/GOV/1002/tax-records"), AccessRule("MEMBER", "DEMO/GOV/1003"),
             AccessRule("GLOBALGROUP", "DEMO/trusted"))
    assert is_allowed(rules, "DEMO/GOV/1002/tax-records", frozenset(), "DEMO")
    assert is_allowed(rules, "DEMO/GOV/1003/patients", frozenset(), "DEMO")
    assert is_allowed(rules, "DEMO/GOV/1004/x", frozenset({"trusted"}), "DEMO")
    assert not is_allowed(rules, "DEMO/GOV/1004/x", frozenset({"untrusted"}), "DEMO")


def test_rules_from_settings_match_the_allow_list(tmp_path: Path) -> None:
    config = gateway_config()
    config["services"][0]["allow"] = ["SUBSYSTEM:DEMO/GOV/1002/tax-records", "MEMBER:DEMO/GOV/1003",
                                      "GLOBALGROUP:DEMO/trusted"]
    settings = load_model(write(tmp_path, config), GatewaySettings)
    rules = settings.services[0].access_rules
    assert rules == (AccessRule("SUBSYSTEM", "DEMO/GOV/1002/tax-records"), AccessRule("MEMBER", "DEMO/GOV/1003"),
                     AccessRule("GLOBALGROUP", "DEMO/trusted"))
    assert denied(rules, "DEMO/GOV/1004/x").full_code == "Server.ServerProxy.AccessDenied"


# -- routing ------------------------------------------------------------------------------------------------------


def gateway(n: int) -> Gateway:
    return Gateway(server=f"DEMO/GOV/1002/gw-{n}", address=f"https://10.0.0.{n}:5500",
                   auth_cert_sha256=[f"{n:02x}" * 32], clients=["DEMO/GOV/1002/tax-records"])


GWS = (gateway(1), gateway(2), gateway(3))


def servers(gws: list[Gateway]) -> list[str]:
    return [gw.server.rsplit("/", 1)[1] for gw in gws]


def failed(times: int, at: float) -> PeerHealth:
    health = PeerHealth()
    for _ in range(times):
        health.record_failure(at)
    return health


def test_healthy_in_configuration_order() -> None:
    assert servers(order_gateways(GWS, {}, 100.0)) == ["gw-1", "gw-2", "gw-3"]
    assert servers(order_gateways(GWS, {gw.address: PeerHealth() for gw in GWS}, 100.0)) == ["gw-1", "gw-2", "gw-3"]


def test_recently_failed_go_last() -> None:
    health = {GWS[0].address: failed(1, 95.0)}
    assert servers(order_gateways(GWS, health, 100.0)) == ["gw-2", "gw-3", "gw-1"]


def test_more_failures_go_further_back() -> None:
    health = {GWS[0].address: failed(3, 99.0), GWS[1].address: failed(1, 99.0)}
    assert servers(order_gateways(GWS, health, 100.0)) == ["gw-3", "gw-2", "gw-1"]


def test_cooldown_expiry_restores_order() -> None:
    health = {GWS[0].address: failed(5, 50.0)}
    assert servers(order_gateways(GWS, health, 79.9, cooldown_seconds=30.0)) == ["gw-2", "gw-3", "gw-1"]
    assert servers(order_gateways(GWS, health, 80.0, cooldown_seconds=30.0)) == ["gw-1", "gw-2", "gw-3"]
    assert servers(order_gateways(GWS, health, 60.0, cooldown_seconds=5.0)) == ["gw-1", "gw-2", "gw-3"]


def test_success_resets_health() -> None:
    health = {GWS[0].address: failed(2, 99.0)}
    health[GWS[0].address].record_success()
    assert health[GWS[0].address].consecutive_failures == 0
    assert servers(order_gateways(GWS, health, 100.0)) == ["gw-1", "gw-2", "gw-3"]


def test_all_failed_keeps_every_gateway() -> None:
    health = {gw.address: failed(1, 99.0) for gw in GWS}
    assert servers(order_gateways(GWS, health, 100.0)) == ["gw-1", "gw-2", "gw-3"]  # nobody is dropped


def test_target_server_narrows_the_choice() -> None:
    health = {GWS[1].address: failed(4, 99.0)}
    assert servers(order_gateways(GWS, health, 100.0, target_server="DEMO/GOV/1002/gw-2")) == ["gw-2"]
    assert order_gateways(GWS, {}, 100.0, target_server="DEMO/GOV/1002/gw-9") == []
    assert order_gateways((), {}, 100.0) == []


# -- configuration files ------------------------------------------------------------------------------------------


def gateway_config() -> dict[str, Any]:
    return copy.deepcopy({
        "server": "DEMO/GOV/1001/gw-civil",
        "anchor": {"instance": "DEMO", "registry_url": "http://127.0.0.1:4400", "signing_cert_sha256": ["ab" * 32]},
        "state_dir": "var/gw-civil",
        "client_side": {"port": 8101},
        "server_side": {"port": 5501},
        "auth": {"key": "certs/auth.key", "certificate": "certs/auth.pem"},
        "signing": [{"member": "DEMO/GOV/1001", "key": "certs/sign.key", "certificate": "certs/sign.pem"}],
        "services": [
            {"id": SERVICE, "type": "soap", "url": "http://127.0.0.1:8201/population",
             "allow": ["GLOBALGROUP:DEMO/trusted"]},
            {"id": "DEMO/GOV/1001/population/households", "type": "rest", "url": "http://127.0.0.1:8202/h",
             "allow": ["SUBSYSTEM:DEMO/GOV/1002/tax-records"]},
        ],
    })


def write(tmp_path: Path, data: object, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def config_error(path: Path, model: type[Any] = GatewaySettings) -> str:
    with pytest.raises(ConfigError) as info:
        load_model(path, model)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    return message


def test_good_gateway_file(tmp_path: Path) -> None:
    settings = load_model(write(tmp_path, gateway_config()), GatewaySettings)
    assert settings.server_id.server_code == "gw-civil"
    assert settings.state_dir == tmp_path / "var/gw-civil"  # relative to the file, not the working directory
    assert settings.auth.key == tmp_path / "certs/auth.key"
    assert [s.service_id.service_code for s in settings.services] == ["getPerson", "households"]


@pytest.mark.parametrize(("value", "words"), [
    ("DEMO/GOV/1001/population", "must have 5 or 6 '/'-separated parts"),
    ("DEMO/GOV/1001/popu lation/getPerson", "subsystemCode"),
    ("DEMO/GOV/1001/population/get%Person", "serviceCode"),
    ("DEMO/GOV/1001/population/listMethods", "reserved"),
])
def test_bad_service_id(tmp_path: Path, value: str, words: str) -> None:
    config = gateway_config()
    config["services"][1]["id"] = value
    message = config_error(write(tmp_path, config))
    line = next(line for line in message.splitlines() if "services.1.id" in line)
    assert words in line


@pytest.mark.parametrize(("entry", "words"), [
    ("DEMO/GOV/1002/tax-records", "must start with one of"),
    ("SUBSYSTEM:DEMO/GOV/1002/tax records", "subsystemCode"),
    ("SUBSYSTEM:DEMO/GOV/1002", "subsystem id"),
    ("SERVER:DEMO/GOV/1002/gw-tax", "SUBSYSTEM, MEMBER or GLOBALGROUP"),
    ("SERVICE:DEMO/GOV/1002/tax-records/x", "SUBSYSTEM, MEMBER or GLOBALGROUP"),
    ("GLOBALGROUP:trusted", "global group id"),
])
def test_bad_allow_entry(tmp_path: Path, entry: str, words: str) -> None:
    config = gateway_config()
    config["services"][0]["allow"] = ["MEMBER:DEMO/GOV/1003", entry]
    message = config_error(write(tmp_path, config))
    line = next(line for line in message.splitlines() if "services.0.allow" in line)
    assert words in line


def test_duplicate_services_ignore_the_version(tmp_path: Path) -> None:
    config = gateway_config()
    config["services"].append({**config["services"][0], "id": "DEMO/GOV/1001/population/getPerson/v2"})
    message = config_error(write(tmp_path, config))
    assert "services.2.id" in message
    assert "DEMO/GOV/1001/population/getPerson is listed twice" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    config = gateway_config()
    config["servces"] = []
    message = config_error(write(tmp_path, config))
    assert "servces: Extra inputs are not permitted" in message


def test_unknown_nested_key_and_every_problem_listed(tmp_path: Path) -> None:
    config = gateway_config()
    config["services"][1]["timeout"] = 3
    config["client_side"]["port"] = 70000
    del config["auth"]
    message = config_error(write(tmp_path, config))
    assert "3 problem(s)" in message
    assert "services.1.timeout:" in message
    assert "client_side.port:" in message
    assert "auth: Field required" in message


def test_bad_gateway_fields(tmp_path: Path) -> None:
    config = gateway_config()
    config["server"] = "DEMO/GOV/1001"
    config["signing"][0]["member"] = "DEMO/GOV/1001/population"
    config["services"][0]["url"] = "ftp://127.0.0.1/x"
    config["anchor"]["signing_cert_sha256"] = ["abc"]
    message = config_error(write(tmp_path, config))
    assert "server: server id" in message
    assert "signing.0.member: member id" in message
    assert "services.0.url: must be an absolute http or https URL" in message
    assert "anchor.signing_cert_sha256: 'abc' is not a SHA-256 fingerprint" in message


def test_two_sign_keys_for_one_member(tmp_path: Path) -> None:
    config = gateway_config()
    config["signing"].append(dict(config["signing"][0]))
    assert "signing.1.member: DEMO/GOV/1001 has two sign keys" in config_error(write(tmp_path, config))


@pytest.mark.parametrize(("content", "words"), [
    (b"server: [unclosed", "not valid YAML at line"),
    (b"- a list\n- not a mapping\n", "must be a YAML mapping"),
    (b"", "must be a YAML mapping"),
    (b"!!python/object/apply:os.system ['true']\n", "not valid YAML"),
])
def test_unreadable_files(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_bytes(content)
    assert words in config_error(path)


def test_missing_and_oversized_files(tmp_path: Path) -> None:
    assert "cannot read" in config_error(tmp_path / "nope.yaml")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    assert "larger than" in config_error(big)


def federation_config() -> dict[str, Any]:
    return copy.deepcopy({
        "instance": "DEMO",
        "registry": {"signing_key": "registry/sign.key", "signing_certificate": "registry/sign.pem"},
        "approved_cas": [{"name": "Test CA", "certificate": "ca/ca.pem"}],
        "members": [
            {"class": "GOV", "code": "1001", "name": "Civil Registry", "subsystems": ["population"]},
            {"class": "GOV", "code": "1002", "name": "Tax Authority", "subsystems": ["tax-records"]},
        ],
        "gateways": [
            {"server": "DEMO/GOV/1001/gw-civil", "address": "https://127.0.0.1:5501",
             "auth_cert_sha256": ["ab" * 32], "clients": ["DEMO/GOV/1001/population"]},
            {"server": "DEMO/GOV/1002/gw-tax", "address": "https://127.0.0.1:5502",
             "auth_certificate": "gw-tax/auth.pem", "clients": ["DEMO/GOV/1002/tax-records"]},
        ],
        "global_groups": [{"code": "trusted", "members": ["DEMO/GOV/1002/tax-records", "DEMO/GOV/1001"]}],
    })


def test_good_federation_file(tmp_path: Path) -> None:
    config = load_model(write(tmp_path, federation_config(), "federation.yaml"), FederationConfig)
    assert config.members[0].member_class == "GOV"
    assert config.approved_cas[0].certificate == tmp_path / "ca/ca.pem"


def test_federation_gateway_client_must_be_a_registered_subsystem(tmp_path: Path) -> None:
    config = federation_config()
    config["gateways"][0]["clients"] = ["DEMO/GOV/1001/population", "DEMO/GOV/1001/unknown"]
    message = config_error(write(tmp_path, config, "federation.yaml"), FederationConfig)
    assert "gateways.0.clients: DEMO/GOV/1001/unknown is not a registered subsystem" in message


def test_federation_gateway_client_must_be_a_subsystem_id(tmp_path: Path) -> None:
    config = federation_config()
    config["gateways"][1]["clients"] = ["DEMO/GOV/1002"]
    message = config_error(write(tmp_path, config, "federation.yaml"), FederationConfig)
    assert "gateways.1.clients: subsystem id" in message


def test_federation_references(tmp_path: Path) -> None:
    config = federation_config()
    config["gateways"][1]["server"] = "DEMO/GOV/1009/gw-x"
    message = config_error(write(tmp_path, config, "federation.yaml"), FederationConfig)
    assert "gateways.1.server: owner DEMO/GOV/1009 is not a member" in message
    config = federation_config()
    config["global_groups"][0]["members"].append("DEMO/GOV/1002/nope")
    message = config_error(write(tmp_path, config, "federation.yaml"), FederationConfig)
    assert "global_groups.0.members: DEMO/GOV/1002/nope is not a member or subsystem" in message


def test_federation_field_errors(tmp_path: Path) -> None:
    config = federation_config()
    config["members"][0]["subsystems"] = ["pop ulation"]
    config["gateways"][0]["address"] = "http://127.0.0.1:5501"
    del config["gateways"][1]["auth_certificate"]
    config["approved_cas"] = []
    message = config_error(write(tmp_path, config, "federation.yaml"), FederationConfig)
    assert "members.0.subsystems: subsystemCode 'pop ulation'" in message
    assert "gateways.0.address: must be an absolute https URL" in message
    assert "gateways.1: give auth_certificate" in message
    assert "approved_cas:" in message


def test_tls_under_server_side_is_refused_not_ignored(tmp_path: Path) -> None:
    data = gateway_config()
    data["server_side"]["tls"] = {"certificate": "c.pem", "key": "c.key"}
    assert "server_side.tls: the server side always uses mutual TLS" in config_error(write(tmp_path, data))


def test_caller_certificates_need_client_cas(tmp_path: Path) -> None:
    data = gateway_config()
    data["adapters"] = [{"name": "clinic", "protocol": "rest", "service": "DEMO/GOV/1001/population/households",
                         "client_certificates": {"ab" * 32: "DEMO/GOV/1003/patients"}}]
    assert "adapters.0.client_certificates: callers present no certificate" in config_error(write(tmp_path, data))
    data["client_side"]["tls"] = {"certificate": "c.pem", "key": "c.key", "client_cas": "cas.pem"}
    load_model(write(tmp_path, data), GatewaySettings)
