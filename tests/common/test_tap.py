"""tap: every topic from real publisher processes comes out as one valid JSON line."""

import json
import subprocess

import msgspec

from common.config import PUBLISHERS
from harness.proc import PY, python_module, write_config
from harness.samples import SAMPLES


def _publishers(spawn, cfg):
    for name in PUBLISHERS:
        spawn(python_module("harness.publish", name, "--config", cfg, "--period", 0.05))


def test_tap_prints_every_topic_as_json_lines_json_tool_accepts(tmp_path, spawn):
    cfg = write_config(tmp_path / "c.yaml")
    _publishers(spawn, cfg)
    tap = spawn(python_module("common.tap", "--config", cfg, "--count", 120, "--timeout", 90))
    assert tap.wait(120) == 0, tap.text("err")
    lines = tap.text("out")
    assert len(lines) == 120
    seen = {}
    for line in lines:
        checked = subprocess.run([PY, "-m", "json.tool"], input=line.encode(), capture_output=True)
        assert checked.returncode == 0, (line, checked.stderr)
        record = json.loads(line)
        assert set(record) == {"topic", "src", "seq", "ts", "data"}
        seen[record["topic"]] = record
    assert set(seen) == set(SAMPLES)
    for topic, record in seen.items():
        # JSON turns map keys into strings (cell_alarms {1: "high"} -> {"1": "high"}).
        assert record["data"] == json.loads(msgspec.json.encode(SAMPLES[topic]))
    assert seen["gps.link"]["data"]["last_ok_ts"] is None
    assert seen["bms.info"]["src"] == "bms_reader" and isinstance(seen["bms.info"]["seq"], int)


def test_tap_topic_prefix_filters(tmp_path, spawn):
    cfg = write_config(tmp_path / "c.yaml")
    _publishers(spawn, cfg)
    tap = spawn(python_module("common.tap", "--config", cfg, "--topic", "gps.", "--topic", "uplink.status",
                              "--count", 30, "--timeout", 90))
    assert tap.wait(120) == 0
    topics = {json.loads(line)["topic"] for line in tap.text("out")}
    assert topics == {"gps.fix", "gps.link", "uplink.status"}


def test_tap_fails_when_count_is_not_reached_before_timeout(tmp_path, spawn):
    cfg = write_config(tmp_path / "c.yaml")
    tap = spawn(python_module("common.tap", "--config", cfg, "--count", 1, "--timeout", 0.5))
    assert tap.wait(60) == 1
    assert tap.text("out") == []
    assert any("got 0 of 1 messages" in line for line in tap.text("err"))
