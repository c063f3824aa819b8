"""The ThingsBoard dashboard and alarm rules in docs/thingsboard/ use only keys the uplink sends.

The keys are built from the code, not listed by hand: the telemetry keys of a full record of the
uplink samples (build_record) and the field table, and the client attributes as Uplink sends them
(its base attributes and what Uplink._take adds for a bms.info). A misspelt key in either JSON file,
a unit that differs from common/fields.py, or an alarm rule comparing a key as the wrong type fails here.
"""

import json
import re
from pathlib import Path

import pytest

from common import fields
from common.messages import BmsInfo, Message
from harness.samples import SAMPLES, UPLINK_FIX, UPLINK_SNAPSHOT
from services.tb_uplink import service
from services.tb_uplink.records import build_record

DOCS = Path(__file__).resolve().parents[2] / "docs" / "thingsboard"
NOW = 1_800_000_000.0

# Keys ThingsBoard itself provides (not sent by the uplink), by where they may appear.
THINGSBOARD_SERVER_ATTRIBUTES = {"active"}  # set by ThingsBoard's device state service (inactivity timeout)
ALARM_FIELDS = {"createdTime", "startTime", "endTime", "ackTime", "clearTime", "assignTime", "originator",
                "originatorDisplayName", "originatorLabel", "originatorType", "type", "severity", "status",
                "assignee", "details"}  # ui-ngx shared/models/alarm.models.ts alarmFields
SEVERITIES = {"CRITICAL", "MAJOR", "MINOR", "WARNING", "INDETERMINATE"}
DATA_KEY_TYPES = {"timeseries", "attribute", "function", "alarm", "entityField", "count"}
PATTERN_FIELDS = {"entityName", "entityLabel", "entityType"}


def load(name: str) -> dict:
    return json.loads((DOCS / name).read_text(encoding="utf-8"))


def telemetry() -> dict:
    """Every telemetry key with a value of its type: a full record of the samples (two 16-cell packs,
    a fix and a trip state)."""
    snapshot = Message("bms.snapshot", "test", 0, NOW - 0.5, UPLINK_SNAPSHOT)
    fix = Message("gps.fix", "test", 0, NOW - 0.3, UPLINK_FIX)
    trip = Message("trip.state", "test", 0, NOW - 0.2, SAMPLES["trip.state"])
    _, values = build_record(snapshot, fix, 0, 0, True, True, trip)
    return values


def field_table_keys() -> set[str]:
    """The pack-1 and system keys of common/fields.py, cells and sensors numbered for the sample's counts."""
    pack = UPLINK_SNAPSHOT.packs[0]
    return (set(fields.BY_KEY) | {"alive", "analog_data_packs", "warning_info_packs"}
            | {f"{fields.CELL_VOLT.key}_{fields.number(n, 0)}" for n in range(1, len(pack.cells_mv) + 1)}
            | {f"{fields.TEMP.key}_{n}" for n in range(1, len(pack.temps_c) + 1)})


def client_attributes() -> dict:
    """The attributes Uplink sends: its base attributes plus those of a bms.info with every field set,
    made by the functions the service uses."""
    info = BmsInfo(protocol_version="25", address=1, software_version="P16S100A-1812-1.00",
                   bms_serial="216061024400003A", pack_serial="PACK0001", pack_count=2)
    return {**service.base_attributes("127.0.0.1"), **service.info_attributes(info)}


@pytest.fixture(scope="module")
def sent() -> dict:
    values = telemetry()
    assert field_table_keys() <= set(values), "the full record of the samples carries every key of the field table"
    return values


@pytest.fixture(scope="module")
def attributes() -> dict:
    attrs = client_attributes()
    assert {"software_version", "host_ip", "host_mac", "bms_serial", "pack_count"} <= set(attrs)
    return attrs


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return load("dashboard.json")


@pytest.fixture(scope="module")
def profile() -> dict:
    return load("device_profile_alarms.json")


def data_keys(node) -> list[dict]:
    """Every data key anywhere in a dashboard (datasources, alarm sources, map marker keys)."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("name"), str) and node.get("type") in DATA_KEY_TYPES:
            found.append(node)
        for value in node.values():
            found += data_keys(value)
    elif isinstance(node, list):
        for value in node:
            found += data_keys(value)
    return found


def field_of(key: str) -> fields.Field:
    if key in fields.BY_KEY:
        return fields.BY_KEY[key]
    base = key.rsplit("_", 1)[0]
    return {fields.CELL_VOLT.key: fields.CELL_VOLT, fields.TEMP.key: fields.TEMP}[base]


def alarm_filters(alarm: dict) -> list[tuple[str, dict]]:
    rules = [(severity, rule) for severity, rule in alarm["createRules"].items()] + [("clear", alarm["clearRule"])]
    return [(name, f) for name, rule in rules for f in rule["condition"]["condition"]]


# --- the keys --------------------------------------------------------------------------------------

def test_every_dashboard_key_is_sent_by_the_uplink(dashboard, sent, attributes):
    keys = data_keys(dashboard["configuration"])
    assert len(keys) > 50
    by_type: dict[str, set[str]] = {}
    for key in keys:
        by_type.setdefault(key["type"], set()).add(key["name"])
    assert set(by_type) <= {"timeseries", "attribute", "alarm"}, "no simulated (function) or other keys"
    assert by_type["timeseries"] - set(sent) == set(), "telemetry keys the uplink never sends"
    assert by_type["attribute"] - set(attributes) == set(), "attributes the uplink never sends"
    assert by_type["alarm"] - ALARM_FIELDS == set()
    assert not any(k.startswith("pack_") for k in by_type["timeseries"]), "the dashboard shows pack 1"


def test_the_dashboard_covers_the_driver_cells_temperatures_alarms_gps_and_uplink(dashboard, attributes):
    names = {k["name"] for k in data_keys(dashboard["configuration"])}
    wanted = {"speed_km_h", "soc", "p_pack", "i_pack", "v_pack", "cell_max_volt", "cell_min_volt",
              "cell_max_diff_volt", "i_remaining_capacity", "cell_max_temp", "cell_min_temp", "warning_string",
              "protections", "faults", "warnings", "charge_fet", "discharge_fet", "latitude", "longitude", "alive"}
    wanted |= {f"v_cell_{n}" for n in range(1, 17)} | {f"temp_{n}" for n in range(1, 7)}
    assert wanted - names == set()
    assert set(attributes) - names == set(), "every client attribute is shown"


def test_units_and_decimals_are_those_of_the_field_table(dashboard):
    for key in data_keys(dashboard["configuration"]):
        if key["type"] != "timeseries" or key["name"] in ("alive", "analog_data_packs", "warning_info_packs"):
            continue
        field = field_of(key["name"])
        if "units" in key:
            assert (key["units"] or "") == field.unit, key["name"]
        if key.get("decimals") is not None:
            assert key["decimals"] == field.decimals, key["name"]


def test_the_map_places_the_vehicle_by_latitude_and_longitude_and_its_patterns_name_its_keys(dashboard):
    maps = [w for w in dashboard["configuration"]["widgets"].values() if w["typeFullFqn"] == "system.map"]
    assert len(maps) == 1
    markers = maps[0]["config"]["settings"]["markers"]
    assert markers
    for marker in markers:
        assert (marker["xKey"]["name"], marker["yKey"]["name"]) == ("latitude", "longitude")
        assert marker["xKey"]["type"] == marker["yKey"]["type"] == "timeseries"
        labels = {k["label"] for k in [marker["xKey"], marker["yKey"], *marker["additionalDataKeys"]]}
        for part in ("label", "tooltip"):
            used = set(re.findall(r"\$\{([^}:]+)(?::\d+)?}", marker[part]["pattern"]))
            assert used - labels - PATTERN_FIELDS == set(), f"{part} pattern names a key the marker has not got"


def test_every_alarm_rule_key_is_sent_and_compared_as_the_type_it_is_sent_as(profile, sent, attributes):
    kinds = {str: "STRING", bool: "BOOLEAN", int: "NUMERIC", float: "NUMERIC"}
    seen = set()
    for alarm in profile["profileData"]["alarms"]:
        for rule, f in alarm_filters(alarm):
            key, where = f["key"]["key"], f["key"]["type"]
            seen.add(key)
            if where == "TIME_SERIES":
                assert key in sent, f"{alarm['alarmType']} ({rule}): {key} is not sent"
                assert f["valueType"] == kinds[type(sent[key])], f"{alarm['alarmType']}: {key}"
            else:
                assert where == "ATTRIBUTE", f"{alarm['alarmType']}: {where}"
                assert key in set(attributes) | THINGSBOARD_SERVER_ATTRIBUTES, f"{alarm['alarmType']}: {key}"
    assert {"faults", "protections", "warnings", "cell_max_volt", "cell_min_volt"} <= seen


def test_flag_alarms_raise_on_a_name_list_and_clear_on_the_empty_string(profile, sent):
    """The uplink sends faults/protections/warnings as comma-joined names, "" when there is none."""
    assert sent["faults"] == "" and sent["protections"] == "" and sent["warnings"] == "cell_high_voltage"
    alarms = {a["alarmType"]: a for a in profile["profileData"]["alarms"]}
    for key, severity in (("faults", "CRITICAL"), ("protections", "MAJOR"), ("warnings", "WARNING")):
        alarm = next(a for a in alarms.values() if severity in a["createRules"]
                     and a["createRules"][severity]["condition"]["condition"][0]["key"]["key"] == key)
        create = alarm["createRules"][severity]["condition"]["condition"][0]["predicate"]
        assert (create["type"], create["operation"], create["value"]["defaultValue"]) == ("STRING", "NOT_EQUAL", "")
        clear = alarm["clearRule"]["condition"]["condition"][0]["predicate"]
        if clear["type"] == "COMPLEX":
            assert clear["operation"] == "OR"
        clears = clear["predicates"] if clear["type"] == "COMPLEX" else [clear]
        assert any((p["type"], p["operation"], p["value"]["defaultValue"]) == ("STRING", "EQUAL", "") for p in clears)


def test_alarm_details_name_only_keys_of_their_condition(profile):
    """ThingsBoard fills ${key} in alarmDetails from the keys of the rule's own condition only."""
    for alarm in profile["profileData"]["alarms"]:
        for rule in [*alarm["createRules"].values(), alarm["clearRule"]]:
            keys = {f["key"]["key"] for f in rule["condition"]["condition"]}
            assert set(re.findall(r"\$\{([^}]+)}", rule.get("alarmDetails") or "")) <= keys, alarm["alarmType"]


# --- the structure ThingsBoard needs ---------------------------------------------------------------

def test_dashboard_has_the_export_structure(dashboard, profile):
    assert dashboard["title"] and isinstance(dashboard["configuration"], dict)  # checked by "Import dashboard"
    config = dashboard["configuration"]
    aliases = config["entityAliases"]
    assert aliases and all(alias_id == alias["id"] for alias_id, alias in aliases.items())
    (vehicle,) = aliases.values()
    assert vehicle["filter"] == {"type": "deviceType", "resolveMultiple": False, "deviceNameFilter": "",
                                 "deviceTypes": [profile["name"]]}, "the alias finds devices of the shipped profile"
    widgets = config["widgets"]
    assert widgets
    for widget_id, widget in widgets.items():
        assert widget["id"] == widget_id
        assert re.fullmatch(r"system\.[a-z_.]+", widget["typeFullFqn"]), widget["typeFullFqn"]
        assert widget["type"] in {"latest", "timeseries", "alarm"} and widget["sizeX"] > 0 and widget["sizeY"] > 0
        cfg = widget["config"]
        sources = list(cfg["datasources"]) + ([cfg["alarmSource"]] if "alarmSource" in cfg else [])
        sources += [{"type": m["dsType"], "entityAliasId": m["dsEntityAliasId"]}
                    for m in cfg["settings"].get("markers", [])]
        assert sources, f"{cfg.get('title')} has no data source"
        for source in sources:
            assert source["type"] == "entity" and source["entityAliasId"] in aliases, cfg.get("title")
    layout = config["states"]["default"]
    assert layout["root"] is True
    placed = layout["layouts"]["main"]["widgets"]
    assert set(placed) == set(widgets), "every widget is placed on the default state, and only those"
    assert all(p["col"] + p["sizeX"] <= layout["layouts"]["main"]["gridSettings"]["columns"] for p in placed.values())
    assert config["timewindow"]["realtime"]["timewindowMs"] > 0 and isinstance(config["settings"], dict)


def test_device_profile_has_the_import_structure_and_valid_alarm_rules(profile):
    for key in ("name", "type", "transportType", "provisionType", "profileData"):  # checked by "Import device profile"
        assert profile[key] is not None, key
    alarms = profile["profileData"]["alarms"]
    assert alarms
    assert len({a["id"] for a in alarms}) == len({a["alarmType"] for a in alarms}) == len(alarms)
    for alarm in alarms:
        assert alarm["alarmType"] and alarm["createRules"] and set(alarm["createRules"]) <= SEVERITIES
        assert isinstance(alarm["propagate"], bool)
        for rule in [*alarm["createRules"].values(), alarm["clearRule"]]:
            assert rule["condition"]["condition"] and rule["condition"]["spec"]["type"] in {"SIMPLE", "DURATION",
                                                                                          "REPEATING"}
            for f in rule["condition"]["condition"]:
                assert f["valueType"] in {"STRING", "NUMERIC", "BOOLEAN", "DATE_TIME"}
                assert f["predicate"]["type"] in {"STRING", "NUMERIC", "BOOLEAN", "COMPLEX"}
