"""Sets up monitoring in a federation's files: a monitoring subsystem named in the global configuration, and an
inquiry service configuration that asks through that subsystem's gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def enable_monitoring(federation_file: Path, member: str, subsystem: str = "monitoring") -> str:
    """Give ``member`` (INST/CLASS/CODE) a ``subsystem``, register it at the member's own gateway, and name it the
    federation's monitoring client. Returns the subsystem's path. The registry reads the file at start (and on
    its next regeneration)."""
    data: dict[str, Any] = yaml.safe_load(federation_file.read_text())
    instance, member_class, member_code = member.split("/")
    if instance != data["instance"]:
        raise ValueError(f"{member} is not of instance {data['instance']}")
    path = f"{member}/{subsystem}"
    found = next((m for m in data["members"] if m["class"] == member_class and m["code"] == member_code), None)
    if found is None:
        raise ValueError(f"{member} is not a member of the federation")
    if subsystem not in found.setdefault("subsystems", []):
        found["subsystems"].append(subsystem)
    gateways = [gw for gw in data["gateways"] if gw["server"].startswith(member + "/")]
    if not gateways:
        raise ValueError(f"{member} owns no gateway to register {path} at")
    clients = gateways[0].setdefault("clients", [])
    if path not in clients:
        clients.append(path)
    data["monitoring_client"] = path
    federation_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_settings(path: Path, *, gateway_file: Path, gateway_url: str, client: str, port: int,
                   state_dir: str = "state/inquiry", timeout_seconds: float = 5.0) -> Path:
    """An inquiry configuration beside a gateway's: the same configuration anchor, asking through that gateway."""
    gateway = yaml.safe_load(gateway_file.read_text())
    config = {"anchor": gateway["anchor"], "state_dir": state_dir, "gateway_url": gateway_url, "client": client,
              "host": "127.0.0.1", "port": port, "gateway_timeout_seconds": timeout_seconds}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def demo_lookup(session: Any, url: str, xroad_id: str, tries: int = 20) -> str:
    """One line for the demo: the sample transaction as the unified inquiry sees it (both sides, where time went)."""
    import asyncio

    answer: dict[str, Any] = {}
    for _ in range(tries):
        async with session.get(f"{url}/api/v1/transaction", params={"xroad_id": xroad_id}) as resp:
            answer = await resp.json()
        found = answer.get("transactions") or []
        if found and found[0]["complete"]:
            break
        await asyncio.sleep(0.1)
    found = answer.get("transactions") or []
    if not found:
        return f"  the inquiry did not find {xroad_id}: {answer.get('message') or answer.get('unanswered')}"
    tx = found[0]
    bd = tx["breakdown"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    answered = sum(1 for g in answer["gateways"] if g["status"] == "ok")
    return (f"  {xroad_id}: {'both sides joined' if tx['complete'] else 'INCOMPLETE'} "
            f"({tx['client_server']} -> {tx['service_server']}), trace {tx['trace_id']}, {ms(tx['duration_ms'])} ms = "
            f"client gateway {ms(bd['client_gateway_ms'])} + network {ms(bd['network_ms'])} + provider gateway "
            f"{ms(bd['provider_gateway_ms'])} + backend {ms(bd['backend_ms'])}; {answered} of "
            f"{len(answer['gateways'])} gateways answered\n"
            f"  wasl inquiry tx {xroad_id} --url {url}\n  curl -s '{url}/api/v1/transaction?xroad_id={xroad_id}'")
