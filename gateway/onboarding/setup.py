"""``wasl gateway init``: keys, certificate signing requests, a configuration skeleton and the imported anchor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import ValidationError

from gateway.configfile import ConfigError
from gateway.core import identifiers as ids
from gateway.core.globalconf import ConfigurationAnchor
from gateway.trust.csr import auth_csr_for, sign_csr_for
from gateway.trust.pki import new_key, save_key


@dataclass(frozen=True)
class InitPlan:
    directory: Path
    member: ids.MemberId
    member_name: str
    server: ids.ServerId
    anchor: ConfigurationAnchor
    client_port: int
    server_port: int
    address: str


def read_anchor(path: Path) -> ConfigurationAnchor:
    """An anchor file (YAML or JSON, as ``wasl registry anchor`` writes it), validated."""
    try:
        data = yaml.safe_load(Path(path).read_text())
        return ConfigurationAnchor.model_validate(data)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the anchor: {exc.strerror}") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path}: not a configuration anchor: {exc}") from None


def init_gateway(plan: InitPlan) -> list[Path]:
    """Write keys (0600), CSRs and ``gateway.yaml`` under ``plan.directory``; refuse to overwrite a key."""
    d = plan.directory
    keys = {"sign": d / "keys" / "sign.key", "auth": d / "keys" / "auth.key"}
    for path in keys.values():
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite a private key")
    if plan.member.instance != plan.anchor.instance or plan.server.owner != plan.member:
        raise ConfigError(f"gateway {plan.server} must belong to member {plan.member} of instance "
                          f"{plan.anchor.instance}")
    sign_key, auth_key = new_key(), new_key()
    save_key(keys["sign"], sign_key)
    save_key(keys["auth"], auth_key)
    (d / "csr").mkdir(parents=True, exist_ok=True)
    (d / "certs").mkdir(parents=True, exist_ok=True)
    sign_csr = d / "csr" / "sign.csr"
    auth_csr = d / "csr" / "auth.csr"
    sign_csr.write_bytes(sign_csr_for(plan.member, plan.member_name, sign_key).public_bytes(Encoding.PEM))
    auth_csr.write_bytes(auth_csr_for(plan.server, auth_key).public_bytes(Encoding.PEM))
    config = {
        "server": plan.server.path(),
        "anchor": plan.anchor.model_dump(),
        "state_dir": "state",
        "client_side": {"host": "127.0.0.1", "port": plan.client_port},
        "server_side": {"host": "127.0.0.1", "port": plan.server_port},
        "auth": {"key": "keys/auth.key", "certificate": "certs/auth.pem"},
        "signing": [{"member": plan.member.path(), "key": "keys/sign.key", "certificate": "certs/sign.pem"}],
        "services": [],
    }
    config_file = d / "gateway.yaml"
    config_file.write_text(
        f"# Gateway {plan.server} of {plan.member_name}, written by wasl gateway init.\n"
        f"# Its server side will be registered at {plan.address}.\n" + yaml.safe_dump(config, sort_keys=False))
    return [keys["sign"], keys["auth"], sign_csr, auth_csr, config_file]
