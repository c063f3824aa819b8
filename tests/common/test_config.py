"""Config validation: every bad file stops a service with status 2 and one line naming the problem."""

import os

import pytest

from common import config
from harness.hostile import ALIAS_BOMB, DEEP_NESTING, HUGE_VALUE
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
    ("address-twice", "bms_reader:\n  addresses: [1, 2, 1]\n", "bms_reader.addresses: give each pack address once"),
    ("address-out-of-range", "bms_reader:\n  addresses: [1, 16]\n", "bms_reader.addresses"),
    ("unknown-protocol", "bms_reader:\n  protocol: 30\n", "bms_reader.protocol"),
    ("unconfirmed-protocol", "bms_reader:\n  protocol: 20-pylon\n", "bms_reader.protocol: 20-pylon units are not confirmed"),
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
    ("cert-without-tls", "tb_uplink:\n  tls: false\n  cert_file: /x.pem\n", "tb_uplink.cert_file"),
    ("ca-without-tls", "tb_uplink:\n  host: 127.0.0.1\n  ca_file: /ca.pem\n", "tb_uplink.ca_file"),
    ("outbox-in-memory", "tb_uplink:\n  outbox_path: ':memory:'\n", "tb_uplink.outbox_path"),
    ("empty-file", "# nothing but a comment\n", "the file has no settings"),
    ("endpoint-twice-spelt-localhost", "bus:\n  gps_reader: tcp://localhost:7301\n", "bus.gps_reader"),
    ("endpoint-twice-leading-zero", "bus:\n  gps_reader: tcp://127.0.0.1:07301\n", "bus.gps_reader"),
    ("endpoint-query", "bus:\n  gps_reader: tcp://127.0.0.1:7399?x=1\n", "bus.gps_reader"),
    ("ipc-missing-directory", "bus:\n  gps_reader: ipc:///no/such/dir/gps\n", "bus.gps_reader"),
    ("ipc-path-too-long", f"bus:\n  gps_reader: ipc:///tmp/{'x' * 120}\n", "a Unix socket path holds 107"),
    ("alias-bomb", ALIAS_BOMB, "aliases"),
    ("deep-nesting", DEEP_NESTING, "nested deeper"),
    ("huge-value", HUGE_VALUE, "bms_reader.bms_port"),
    ("speedup-without-start", "simulation:\n  speedup: 8\n", "simulation.start_ts"),
    ("speedup-below-one", "simulation:\n  speedup: 0.5\n  start_ts: 1\n", "simulation.speedup = 0.5"),
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
    assert len(lines[0]) < 300


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


def test_an_empty_file_is_refused_not_taken_as_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    with pytest.raises(config.ConfigError, match="the file has no settings"):
        config.load(path)


@pytest.mark.parametrize(("case", "names"), [("alias-bomb", "alias *b refers to a node that holds aliases"),
                                              ("deep-nesting", "nested deeper than 20 levels")])
def test_the_alias_bomb_and_deep_nesting_are_refused_before_anything_is_expanded(tmp_path, case, names):
    # How fast: bench/config_refusal.py.
    path = tmp_path / "c.yaml"
    path.write_text(next(text for name, text, _ in BAD if name == case))
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert names in str(e.value) and len(str(e.value)) < 300


def test_a_few_plain_aliases_are_fine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("bms_reader: &bms\n  bms_port: 5000\n  connection_type: IP\n  bms_ip: 10.0.0.2\n"
                    "gps_reader:\n  tcp_port: 5000\n")
    assert config.load(path).bms_reader.bms_port == 5000


def test_tls_is_on_by_default_for_any_server_that_is_not_this_machine(tmp_path):
    path = tmp_path / "c.yaml"
    for host, tls, port in (("mqtt.thingsboard.cloud", True, 8883), ("192.168.1.20", True, 8883),
                            ("127.0.0.1", False, 1883), ("localhost", False, 1883), ("::1", False, 1883)):
        path.write_text(f"tb_uplink:\n  host: '{host}'\n")
        uplink = config.load(path).tb_uplink
        assert (uplink.tls, uplink.port) == (tls, port), host
    path.write_text("tb_uplink:\n  host: 192.168.1.20\n  tls: false\n")
    assert (config.load(path).tb_uplink.tls, config.load(path).tb_uplink.port) == (False, 1883), "a local CE server"
    assert config.load(REPO / "config.yaml").tb_uplink.tls, "the shipped config goes to the Cloud with TLS"


def test_a_fifo_as_the_config_or_the_token_file_stops_with_a_line(tmp_path, spawn):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    child = spawn(python_module("services.bms_reader", "--config", fifo))
    assert child.wait(60) == 2
    assert child.text("err") == [f"bms_reader: config error: {fifo}: the config file is not a regular file"]
    path = tmp_path / "c.yaml"
    path.write_text(f"tb_uplink:\n  host: 127.0.0.1\n  token_file: {fifo}\n  outbox_path: {tmp_path}/o.db\n")
    child = spawn(python_module("services.tb_uplink", "--config", path))
    assert child.wait(60) == 2
    assert child.text("err") == ["tb_uplink: config error: tb_uplink.token_file is not a regular file"]


TOKEN = "Xy7TOKENpasted9Q"


@pytest.mark.parametrize("key", ["token_file", "token_env", "auth"])
def test_a_token_pasted_into_the_wrong_key_is_never_printed(tmp_path, spawn, key):
    path = tmp_path / "c.yaml"
    path.write_text(f"tb_uplink:\n  host: 127.0.0.1\n  {key}: {TOKEN}\n  outbox_path: {tmp_path}/o.db\n")
    child = spawn(python_module("services.tb_uplink", "--config", path), env={TOKEN: ""})
    assert child.wait(60) == 2
    lines = child.text()
    assert len(lines) == 1 and f"tb_uplink.{key}" in lines[0] or "tb_uplink.token" in lines[0], lines
    assert TOKEN not in "\n".join(lines)


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
    path.write_text(f"tb_uplink:\n  host: 127.0.0.1\n  token_env: PACE_TEST_NO_SUCH_VARIABLE\n"
                    f"  outbox_path: {tmp_path}/o.db\n")
    child = spawn(python_module("services.tb_uplink", "--config", path))
    assert child.wait(60) == 2
    assert child.text("err") == ["tb_uplink: config error: tb_uplink.token: no ThingsBoard access token; set "
                                 "tb_uplink.token, or the environment variable tb_uplink.token_env names"]
