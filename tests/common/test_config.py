"""Config validation: every bad file stops a service with status 2 and one line naming the problem."""

import pytest

from common import config
from harness.proc import REPO, python_module

BAD = [
    # (id, file text, what the one line must name)
    ("unknown-top-key", "scan_interval: 5\n", "scan_interval: unknown key"),
    ("unknown-section-key", "bms_reader:\n  bms_prot: 5000\n", "bms_reader.bms_prot: unknown key"),
    ("wrong-type", "bms_reader:\n  bms_port: five\n", "bms_reader.bms_port = 'five'"),
    ("port-too-big", "bms_reader:\n  bms_port: 70000\n", "bms_reader.bms_port = 70000"),
    ("port-zero", "tb_uplink:\n  port: 0\n", "tb_uplink.port = 0"),
    ("bad-choice", "bms_reader:\n  connection_type: serial\n", "bms_reader.connection_type = 'serial'"),
    ("debug-out-of-range", "debug_output: 4\n", "debug_output = 4"),
    ("negative-interval", "bms_reader:\n  scan_interval: -1\n", "bms_reader.scan_interval = -1"),
    ("ip-without-address", "bms_reader:\n  connection_type: IP\n", "bms_reader.bms_ip"),
    ("endpoint-malformed", "bus:\n  bms_reader: 127.0.0.1:7301\n", "bus.bms_reader"),
    ("endpoint-no-port", "bus:\n  gps_reader: tcp://127.0.0.1\n", "bus.gps_reader"),
    ("endpoint-not-loopback", "bus:\n  tb_uplink: tcp://0.0.0.0:7303\n", "bus.tb_uplink"),
    ("endpoint-twice", "bus:\n  gps_reader: tcp://127.0.0.1:7301\n", "bus.gps_reader"),
    ("section-not-mapping", "gui: 5\n", "gui = 5"),
    ("top-not-mapping", "- bms_reader\n", "expected a mapping of sections"),
    ("malformed-yaml", "bms_reader:\n  bms_port: [5000\n", "malformed YAML"),
    ("tab-indent", "bms_reader:\n\tbms_port: 5000\n", "malformed YAML"),
    ("duplicate-key", "bms_reader:\n  bms_port: 1\n  bms_port: 2\n", "key 'bms_port' is given twice"),
    ("bool-for-int", "gui:\n  width: true\n", "gui.width = True"),
    ("file-without-path", "gps_reader:\n  source: file\n", "gps_reader.file"),
    ("cert-without-tls", "tb_uplink:\n  cert_file: /x.pem\n", "tb_uplink.cert_file"),
]


# Every service loads the whole file the same way: all cases on one, a few on each of the others.
CASES = [("bms_reader", *case) for case in BAD] + [
    (service, *case) for service in ("gps_reader", "tb_uplink", "gui", "tap")
    for case in BAD if case[0] in ("unknown-top-key", "malformed-yaml", "endpoint-twice")]


@pytest.mark.parametrize(("service", "case", "text", "names"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bad_config_stops_with_status_2_and_one_line(tmp_path, spawn, service, case, text, names):
    module = "common.tap" if service == "tap" else f"services.{service}"
    path = tmp_path / "config.yaml"
    path.write_text(text)
    child = spawn(python_module(module, "--config", path))
    assert child.wait(60) == 2
    lines = child.text("err")
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{service}: config error: {path}: ")
    assert names in lines[0]
    assert "Traceback" not in lines[0] and child.text("out") == []


def test_missing_file_stops_with_status_2_and_one_line(tmp_path, spawn):
    child = spawn(python_module("services.bms_reader", "--config", tmp_path / "nope.yaml"))
    assert child.wait(60) == 2
    assert child.text("err") == [f"bms_reader: config error: {tmp_path / 'nope.yaml'}: "
                                 "cannot read the config file: No such file or directory"]


def test_secrets_never_appear_in_config_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tb_uplink:\n  token: [s3cret-token]\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert "s3cret" not in str(e.value) and "tb_uplink.token = <hidden>" in str(e.value)


@pytest.mark.parametrize("name", ["config.yaml", "config.demo.yaml"])
def test_shipped_configs_are_valid(name):
    config.load(REPO / name)


def test_original_option_names_keep_their_meaning(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("debug_output: 3\ndebug_output2: 2\n"
                    "bms_reader:\n  connection_type: IP\n  bms_ip: 10.0.0.161\n  bms_port: 5000\n"
                    "  bms_serial: /dev/ttyUSB1\n  scan_interval: 5\n  force_pack_offset: 20\n"
                    "tb_uplink:\n  zero_pad_number_cells: 2\n  zero_pad_number_packs: 1\n")
    cfg = config.load(path)
    assert cfg.bms_reader.url == "socket://10.0.0.161:5000"
    assert cfg.bms_reader.scan_interval == 5.0 and cfg.bms_reader.force_pack_offset == 20
    assert (cfg.debug_output, cfg.debug_output2) == (3, 2)
    assert (cfg.tb_uplink.zero_pad_number_cells, cfg.tb_uplink.zero_pad_number_packs) == (2, 1)
    path.write_text("bms_reader:\n  connection_type: Serial\n  bms_serial: /dev/ttyUSB1\n")
    assert config.load(path).bms_reader.url == "/dev/ttyUSB1"


def test_empty_file_gives_the_documented_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert config.load(path) == config.Config()


def test_secret_comes_from_file_then_environment_then_value(tmp_path, monkeypatch):
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    monkeypatch.setenv("PACE_TEST_TOKEN", "from-env")
    assert config.read_secret("from-yaml", "PACE_TEST_TOKEN", str(secret)) == "from-file"
    assert config.read_secret("from-yaml", "PACE_TEST_TOKEN", None) == "from-env"
    monkeypatch.delenv("PACE_TEST_TOKEN")
    assert config.read_secret("from-yaml", "PACE_TEST_TOKEN", None) == "from-yaml"
    assert config.read_secret("from-yaml", None, str(tmp_path / "missing")) is None
    secret.write_text("  tok3n \n# a comment\n")
    assert config.read_secret(None, None, str(secret)) == "tok3n", "the first line only"
    secret.write_bytes(b"\xff\xfe")
    assert config.read_secret(None, None, str(secret)) is None


def test_uplink_without_any_token_stops_with_one_line(tmp_path, spawn):
    path = tmp_path / "c.yaml"
    path.write_text(f"tb_uplink:\n  token_env: PACE_TEST_NO_SUCH_VARIABLE\n  outbox_path: {tmp_path}/o.db\n")
    child = spawn(python_module("services.tb_uplink", "--config", path))
    assert child.wait(60) == 2
    assert child.text("err") == ["tb_uplink: config error: tb_uplink.token: no ThingsBoard access token; set "
                                 "tb_uplink.token or the environment variable PACE_TEST_NO_SUCH_VARIABLE"]
