"""A real gateway for the help request tests: the example site with a Zigbee2MQTT caller
whose keys 2 and 3 are help keys (助餐, 维修) and a door reader where the grid member's card
records a visit, on a real Mosquitto and, when given, the
simulated case system."""

from __future__ import annotations

from gateway.broker import free_port
from tests.support import GatewayProcess, site_copy

__all__ = ["DOOR_TOPIC", "HELP_CALLER", "HELP_TOPIC", "help_gateway"]

HELP_CALLER = "caller-z-7-101"
HELP_TOPIC = f"zigbee2mqtt/{HELP_CALLER}"
#: h-7-101's door reader: the grid member's card A1B2C3 records a visit
DOOR_READER = "door-7-101"
DOOR_TOPIC = f"devices/{DOOR_READER}"


def help_gateway(tmp_path, mosquitto, case_system=None, *roles: str) -> GatewayProcess:
    port = free_port()
    config = site_copy(tmp_path / "site", mqtt_port=mosquitto.port,
                       case_url=case_system.url if case_system else None,
                       callback_url=f"http://127.0.0.1:{port}/api/case-callback"
                       if case_system else None)
    with open(config / "devices.yaml", "a", encoding="utf-8") as f:
        f.write(f"  - id: {HELP_CALLER}\n    type: emergency_caller\n    household: h-7-101\n"
                f"    name: 客厅呼叫器\n    mqtt: {{zigbee2mqtt: {HELP_CALLER}}}\n"
                "    help_actions: {2_single: meal, 3_single: repair}\n"
                f"  - id: {DOOR_READER}\n    type: door_access\n    household: h-7-101\n"
                f"    profile: json-door-reader\n    mqtt: {{topic: {DOOR_TOPIC}}}\n"
                "    visit_cards: {A1B2C3: 王芳}\n")
    (config / "profiles").mkdir(exist_ok=True)
    (config / "profiles" / "door-reader.yaml").write_text(
        "id: json-door-reader\ndevice_type: door_access\nformat: json\n"
        "fields:\n  access: {kind: access}\n", "utf-8")
    env = {"CASE_SYSTEM_SECRET": case_system.secret} if case_system else None
    gw = GatewayProcess(config, tmp_path / "data", env=env, port=port)
    if roles:
        gw.add_users(*roles)
    gw.admin_token = gw.token("admin", "test-admin")
    return gw
