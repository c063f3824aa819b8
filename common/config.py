"""Load and validate config.yaml.

The whole file is checked strictly when any service starts (unknown keys, wrong types and
out-of-range values are errors), so a typo anywhere is found at once instead of when some
code path first reads the key. A problem is reported as one line naming the file, the key, the
value and what was expected, and the service exits with status 2.

The option names of the original bms.py keep their meaning: ``connection_type`` (Serial/IP),
``bms_serial``, ``bms_ip``, ``bms_port``, ``scan_interval`` (s between poll cycles; 0 = as fast
as the line allows), ``force_pack_offset`` (hex characters skipped after each pack block),
``debug_output`` (0-3, log detail), ``debug_output2`` (0-2: 1 logs what is published for the
display, 2 also each ThingsBoard record), ``zero_pad_number_cells`` / ``zero_pad_number_packs``
(digits that cell and pack numbers are zero-padded to in ThingsBoard keys; 0 = no padding).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from common.bus import DEFAULT_MAX_MESSAGE_BYTES, EndpointError, check_endpoint

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]
Baud = Annotated[int, msgspec.Meta(ge=300, le=921600)]
PadDigits = Annotated[int, msgspec.Meta(ge=0, le=4)]

SECRET_KEYS = {"token", "password"}


class ConfigError(Exception):
    """A configuration problem, already phrased as the one line the user sees."""


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class BusConfig(_Section):
    """Where each publisher binds; consumers connect to the same endpoints."""

    bms_reader: str = "tcp://127.0.0.1:7301"
    gps_reader: str = "tcp://127.0.0.1:7302"
    tb_uplink: str = "tcp://127.0.0.1:7303"
    allow_remote: bool = False
    max_message_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 << 20)] = DEFAULT_MAX_MESSAGE_BYTES

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for name in PUBLISHERS:
            endpoint = getattr(self, name)
            try:
                check_endpoint(endpoint, self.allow_remote)
            except EndpointError as e:
                raise ValueError(f"bus.{name}: {e}") from None
            if endpoint in seen:
                raise ValueError(f"bus.{name}: {endpoint} is already used by bus.{seen[endpoint]}")
            seen[endpoint] = name

    def endpoint(self, publisher: str) -> str:
        return getattr(self, publisher)


PUBLISHERS = ("bms_reader", "gps_reader", "tb_uplink")


class BmsReaderConfig(_Section):
    connection_type: Literal["Serial", "IP"] = "Serial"
    bms_serial: str = "/dev/ttyUSB0"
    bms_baud: Baud = 9600
    bms_ip: str = ""
    bms_port: Port = 5000
    bms_address: Annotated[int, msgspec.Meta(ge=0, le=255)] = 1
    scan_interval: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 1.0
    response_timeout_s: Annotated[float, msgspec.Meta(ge=0.05, le=30)] = 1.0
    capacity_every: Annotated[int, msgspec.Meta(ge=1, le=100000)] = 10
    info_every_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 600.0
    force_pack_offset: Annotated[int, msgspec.Meta(ge=0, le=400)] = 0
    reopen_max_s: Annotated[float, msgspec.Meta(ge=0.1, le=300)] = 2.0

    def __post_init__(self) -> None:
        if self.connection_type == "IP" and not self.bms_ip:
            raise ValueError("bms_reader.bms_ip: connection_type is IP but bms_ip is empty")
        if self.connection_type == "Serial" and not self.bms_serial:
            raise ValueError("bms_reader.bms_serial: connection_type is Serial but bms_serial is empty")

    @property
    def url(self) -> str:
        """The pyserial URL to open: a device path, socket://, rfc2217:// or loop://."""
        if self.connection_type == "IP":
            return f"socket://{self.bms_ip}:{self.bms_port}"
        return self.bms_serial


class GpsReaderConfig(_Section):
    source: Literal["serial", "tcp", "gpsd", "file"] = "serial"
    serial_port: str = "/dev/serial0"
    baud: Baud = 9600
    tcp_host: str = "127.0.0.1"
    tcp_port: Port = 10110
    gpsd_host: str = "127.0.0.1"
    gpsd_port: Port = 2947
    file: str = ""
    replay_speed: Annotated[float, msgspec.Meta(gt=0, le=10000)] = 1.0
    loop_file: bool = False
    stale_after_s: Annotated[float, msgspec.Meta(ge=0.5, le=60)] = 3.0
    reopen_max_s: Annotated[float, msgspec.Meta(ge=0.1, le=300)] = 2.0

    def __post_init__(self) -> None:
        if self.source == "file" and not self.file:
            raise ValueError("gps_reader.file: source is file but no file is given")


class TbUplinkConfig(_Section):
    host: str = "mqtt.thingsboard.cloud"
    port: Port = 1883
    mqtt_protocol: Literal["mqttv5", "mqttv311"] = "mqttv5"
    auth: Literal["token", "basic"] = "token"
    token: str | None = None
    token_env: str | None = "TB_ACCESS_TOKEN"
    token_file: str | None = None
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 60
    upload_interval: Seconds = 5.0
    max_value_age_s: Seconds = 15.0
    outbox_path: str = "var/outbox.sqlite3"
    outbox_max_rows: Annotated[int, msgspec.Meta(ge=10, le=100_000_000)] = 2_000_000
    outbox_max_age_days: Annotated[float, msgspec.Meta(gt=0, le=3650)] = 30.0
    rate_limits: Literal["ce", "cloud"] = "ce"
    rate_limit_pause_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 60.0
    key_set: Literal["full", "original"] = "full"
    batch_max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 << 20)] = 52_000
    inflight_window: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    dead_letter_after: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    connect_timeout_s: Annotated[float, msgspec.Meta(ge=0.5, le=60)] = 5.0
    reconnect_max_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 60.0
    auth_retry_s: Annotated[float, msgspec.Meta(ge=0.5, le=86400)] = 120.0
    zero_pad_number_cells: PadDigits = 0
    zero_pad_number_packs: PadDigits = 0

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("tb_uplink.host: empty; give the ThingsBoard MQTT host name")
        if self.cert_file and not self.tls:
            raise ValueError("tb_uplink.cert_file: a client certificate needs tls: true")
        if self.key_file and not self.cert_file:
            raise ValueError("tb_uplink.key_file: a key file needs cert_file")


class GuiConfig(_Section):
    fps: Annotated[float, msgspec.Meta(ge=1, le=60)] = 10.0
    width: Annotated[int, msgspec.Meta(ge=320, le=7680)] = 800
    height: Annotated[int, msgspec.Meta(ge=240, le=4320)] = 480
    fullscreen: bool = False
    theme: Literal["dark", "light"] = "dark"
    render: Literal["on_change", "always"] = "on_change"


class Config(_Section):
    debug_output: Annotated[int, msgspec.Meta(ge=0, le=3)] = 0
    debug_output2: Annotated[int, msgspec.Meta(ge=0, le=2)] = 0
    bus: BusConfig = msgspec.field(default_factory=BusConfig)
    bms_reader: BmsReaderConfig = msgspec.field(default_factory=BmsReaderConfig)
    gps_reader: GpsReaderConfig = msgspec.field(default_factory=GpsReaderConfig)
    tb_uplink: TbUplinkConfig = msgspec.field(default_factory=TbUplinkConfig)
    gui: GuiConfig = msgspec.field(default_factory=GuiConfig)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load(path: str | os.PathLike) -> Config:
    """Read and validate the config file. Raises ConfigError with a one-line message."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{name}: cannot read the config file: {getattr(e, 'strerror', None) or e}") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{name}: malformed YAML: {_yaml_problem(e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a mapping of sections at the top, got {type(raw).__name__}")
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{name}: {_explain(str(e), raw)}") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{problem}{where}".replace("\n", " ")


_AT = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>[^`]*)`$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]*)`")


def _explain(text: str, raw: dict) -> str:
    """Turn a msgspec error into `key = value: what was expected`."""
    m = _AT.match(text)
    msg, path = (m.group("msg"), m.group("path").lstrip(".")) if m else (text, "")
    unknown = _UNKNOWN.match(msg)
    if unknown:
        key = f"{path}.{unknown.group('key')}" if path else unknown.group("key")
        return f"{key}: unknown key (known keys: {', '.join(_known_keys(path))})"
    if path and msg.startswith(f"{path}."):
        return msg  # a cross-field check already names its key
    value = _lookup(raw, path)
    shown = "<hidden>" if path.rsplit(".", 1)[-1] in SECRET_KEYS else repr(value)
    expected = (msg[0].lower() + msg[1:]).replace("`", "").replace("object", "mapping")
    return f"{path or '<top>'} = {shown}: {expected}"


def _lookup(raw: Any, path: str) -> Any:
    for part in path.split(".") if path else []:
        if isinstance(raw, dict):
            raw = raw.get(part)
        else:
            return None
    return raw


def _known_keys(path: str) -> list[str]:
    return list((_SECTIONS.get(path) or Config).__struct_fields__)


_SECTIONS = {
    "bus": BusConfig,
    "bms_reader": BmsReaderConfig,
    "gps_reader": GpsReaderConfig,
    "tb_uplink": TbUplinkConfig,
    "gui": GuiConfig,
}


def read_secret(value: str | None, env: str | None, file: str | None) -> str | None:
    """A secret from a file (first line), else an environment variable, else the YAML value.

    Read again on every connection attempt, so a corrected token is picked up without a restart.
    """
    if file:
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        first = lines[0].strip() if lines else ""
        return first or None
    if env and os.environ.get(env):
        return os.environ[env]
    return value
