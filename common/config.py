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

import datetime as dt
import ipaddress
import os
import re
import stat
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from common.bus import DEFAULT_MAX_MESSAGE_BYTES, EndpointError, check_endpoint
from common.clock import DATE_FLOOR

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]
Baud = Annotated[int, msgspec.Meta(ge=300, le=921600)]
PadDigits = Annotated[int, msgspec.Meta(ge=0, le=4)]

# Keys whose value is never printed: a secret, or where a secret is often pasted by mistake.
SECRET_KEYS = {"token", "password", "token_file", "token_env", "password_file", "auth"}
MAX_LINE_CHARS = 240
MAX_ALIASES = 50
MAX_DEPTH = 20


class ConfigError(Exception):
    """A configuration problem, already phrased as the one line the user sees."""


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class BusConfig(_Section):
    """Where each publisher binds; consumers connect to the same endpoints."""

    bms_reader: str = "tcp://127.0.0.1:7301"
    gps_reader: str = "tcp://127.0.0.1:7302"
    tb_uplink: str = "tcp://127.0.0.1:7303"
    trip: str = "tcp://127.0.0.1:7304"
    # Command endpoints (docs/contract.md, "Commands"): each service answers requests on its own.
    bms_reader_cmd: str = "tcp://127.0.0.1:7305"
    gps_reader_cmd: str = "tcp://127.0.0.1:7306"
    tb_uplink_cmd: str = "tcp://127.0.0.1:7307"
    trip_cmd: str = "tcp://127.0.0.1:7308"
    allow_remote: bool = False
    max_message_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 << 20)] = DEFAULT_MAX_MESSAGE_BYTES

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for name in PUBLISHERS + tuple(f"{c}_cmd" for c in COMMANDERS):
            try:
                endpoint = check_endpoint(getattr(self, name), self.allow_remote)
            except EndpointError as e:
                raise ValueError(f"bus.{name}: {e}") from None
            if endpoint in seen:
                raise ValueError(f"bus.{name}: {endpoint} is already used by bus.{seen[endpoint]}")
            seen[endpoint] = name
            setattr(self, name, endpoint)  # the canonical spelling, the same in every process

    def endpoint(self, publisher: str) -> str:
        return getattr(self, publisher)

    def command_endpoint(self, service: str) -> str:
        return getattr(self, f"{service}_cmd")


PUBLISHERS = ("bms_reader", "gps_reader", "tb_uplink", "trip")
COMMANDERS = ("bms_reader", "gps_reader", "tb_uplink", "trip")


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
    # The BMS's own settings (thresholds, balancing, sleep, clock): read at start and this often.
    config_every_s: Annotated[float, msgspec.Meta(ge=10, le=86400 * 7)] = 3600.0
    # Set the BMS clock (B2) when a trusted time says it is off by more than this, the car
    # stopped and no current flowing, at most once a day.
    bms_clock_sync: bool = True
    bms_clock_max_drift_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 30.0
    bms_clock_idle_current_a: Annotated[float, msgspec.Meta(ge=0, le=50)] = 1.0
    # Whether the system clock is a trusted time: auto asks the kernel whether NTP has set it;
    # trusted for a car with a real-time clock kept right; untrusted to use GPS time only.
    system_clock: Literal["auto", "trusted", "untrusted"] = "auto"
    # master: ask the master pack for the whole stack (COMMAND FF); per_address: ask each
    # address in turn, as daisy-chained RS485 packs without a master need.
    stack_addressing: Literal["master", "per_address"] = "master"
    addresses: list[Annotated[int, msgspec.Meta(ge=0, le=15)]] = msgspec.field(default_factory=lambda: [1])
    # Reply layout family (common/pace/families.py): auto settles on one from the first reply;
    # 25 is PACE v2.5 (VER 20 hybrids with its layout included); 20-eg4 and 20-seplos the vendor
    # VER 20 layouts. 20-pylon is named so that asking for it stops with a clear line.
    protocol: Literal["auto", "25", "20-eg4", "20-pylon", "20-seplos"] = "auto"

    def __post_init__(self) -> None:
        if self.connection_type == "IP" and not self.bms_ip:
            raise ValueError("bms_reader.bms_ip: connection_type is IP but bms_ip is empty")
        if self.connection_type == "Serial" and not self.bms_serial:
            raise ValueError("bms_reader.bms_serial: connection_type is Serial but bms_serial is empty")
        if self.protocol == "20-pylon":
            raise ValueError("bms_reader.protocol: 20-pylon units are not confirmed by any capture; use auto or 25, "
                             "which read its layout (P = 2, no design capacity) with PACE's units")
        if not self.addresses or len(set(self.addresses)) != len(self.addresses):
            raise ValueError("bms_reader.addresses: give each pack address once, at least one")

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
    # Receiver dates before this are taken for the GPS week-number rollover (common/clock.py)
    # and moved forward by 1024 weeks; set it earlier to replay a log recorded before it.
    date_floor: dt.date = DATE_FLOOR

    def __post_init__(self) -> None:
        if self.source == "file" and not self.file:
            raise ValueError("gps_reader.file: source is file but no file is given")


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class TbUplinkConfig(_Section):
    """``tls`` and ``port`` default by host: TLS on port 8883 for any server that is not on this
    machine (the token must not cross a network in clear text), plain 1883 on loopback. A local
    Community Edition server on the LAN without TLS needs an explicit ``tls: false``."""

    host: str = "mqtt.thingsboard.cloud"
    port: Port | None = None
    mqtt_protocol: Literal["mqttv5", "mqttv311"] = "mqttv5"
    auth: Literal["token", "basic"] = "token"
    token: str | None = None
    token_env: str | None = "TB_ACCESS_TOKEN"
    token_file: str | None = None
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    tls: bool | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 60
    upload_interval: Seconds = 5.0
    max_value_age_s: Seconds = 15.0
    outbox_path: str = "var/outbox.sqlite3"
    outbox_max_rows: Annotated[int, msgspec.Meta(ge=10, le=100_000_000)] = 2_000_000
    outbox_max_age_days: Annotated[float, msgspec.Meta(gt=0, le=3650)] = 30.0
    # A record the budget planner sent only part of (or nothing of) is kept whole in the outbox's
    # ``kept`` table this long after it went, so nothing the car saw is lost to thinning.
    thinned_keep_days: Annotated[float, msgspec.Meta(gt=0, le=3650)] = 7.0
    # The ThingsBoard plan: its rate limits and data-point budget (services/tb_uplink/budget.py).
    # ce: a Community Edition server, unlimited; cloud: Cloud Free; prototype, pilot, startup,
    # business: the paid Cloud plans; custom: the three budget_* figures below.
    rate_limits: Literal["ce", "cloud", "prototype", "pilot", "startup", "business", "custom"] = "ce"
    budget_points_per_hour: Annotated[int, msgspec.Meta(ge=100)] | None = None
    budget_points_per_month: Annotated[int, msgspec.Meta(ge=1000)] | None = None
    budget_messages_per_month: Annotated[int, msgspec.Meta(ge=1000)] | None = None
    drive_hours_per_month: Annotated[float, msgspec.Meta(gt=0, le=744)] = 60.0
    rate_limit_pause_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 60.0
    key_set: Literal["full", "original"] = "full"
    # Whether the system clock can stamp records: auto asks the kernel whether NTP (chrony,
    # systemd-timesyncd) has set it; trusted for a car whose real-time clock is kept right
    # without a network; untrusted to stamp with GPS time whenever the fixes agree.
    system_clock: Literal["auto", "trusted", "untrusted"] = "auto"
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
        if self.tls is None:
            self.tls = not is_loopback_host(self.host)
        if self.port is None:
            self.port = 8883 if self.tls else 1883
        for key in ("ca_file", "cert_file"):
            if getattr(self, key) and not self.tls:
                raise ValueError(f"tb_uplink.{key}: a certificate is only used with tls: true")
        if self.key_file and not self.cert_file:
            raise ValueError("tb_uplink.key_file: a key file needs cert_file")
        budgets = ("budget_points_per_hour", "budget_points_per_month", "budget_messages_per_month")
        if self.rate_limits == "custom" and all(getattr(self, k) is None for k in budgets):
            raise ValueError("tb_uplink.budget_points_per_hour: rate_limits is custom but no budget_* figure is set")
        if self.rate_limits != "custom":
            for key in budgets:
                if getattr(self, key) is not None:
                    raise ValueError(f"tb_uplink.{key}: only used with rate_limits: custom")
        if self.outbox_path.strip() in ("", ":memory:") or self.outbox_path.startswith("file:"):
            raise ValueError("tb_uplink.outbox_path: must be a file path (records must survive a restart)")


class StartLineConfig(_Section):
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    heading_deg: Annotated[float, msgspec.Meta(ge=0, lt=360)]  # the direction a lap crosses it in
    width_m: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 20.0


class TripConfig(_Section):
    state_path: str = "var/trip.sqlite3"
    max_gap_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0  # longer without data: a gap, not bridged
    recent_km: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 5.0  # the window of wh_per_km_recent and range
    min_rate_km: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 0.5  # distance before a rate is trusted
    auto_reset_parked_h: Annotated[float, msgspec.Meta(ge=0, le=8760)] = 8.0  # 0: never
    parked_current_a: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 5.0  # standing with at most this much is parked
    start_line: StartLineConfig | None = None


class SimulationConfig(_Section):
    """A simulated drive run faster than real time (the simulators' --speedup and --drive-start):
    every service stamps its messages on the drive's time, so a 30-minute drive run at 10x takes
    3 minutes and is measured as 30. For tests and demos; never set on a car."""

    speedup: Annotated[float, msgspec.Meta(ge=1, le=1000)] = 1.0
    start_ts: Annotated[float, msgspec.Meta(ge=0)] | None = None  # the drive's t = 0 (POSIX time)

    def __post_init__(self) -> None:
        if self.speedup != 1.0 and self.start_ts is None:
            raise ValueError("simulation.start_ts: a speedup needs the drive's start (the simulators' --drive-start)")


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
    trip: TripConfig = msgspec.field(default_factory=TripConfig)
    simulation: SimulationConfig = msgspec.field(default_factory=SimulationConfig)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML silently keeps the last one), more than
    MAX_ALIASES aliases or an alias to a node that holds aliases itself (the "billion laughs"
    file: 739 bytes that expand to gigabytes), and nesting deeper than MAX_DEPTH."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0
        self._holds_alias: set[int] = set()

    def compose_node(self, parent, index):
        is_alias = self.check_event(yaml.AliasEvent)
        if is_alias:
            self._check_alias(self.peek_event())
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if parent is not None and (is_alias or id(node) in self._holds_alias):
            self._holds_alias.add(id(parent))
        return node

    def _check_alias(self, event) -> None:
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            raise yaml.composer.ComposerError(None, None, f"more than {MAX_ALIASES} aliases", event.start_mark)
        target = self.anchors.get(event.anchor)
        if target is not None and id(target) in self._holds_alias:
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} refers to a node that holds "
                                              "aliases itself", event.start_mark)

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
    """Read and validate the config file. Raises ConfigError with a one-line message of at most
    MAX_LINE_CHARS characters."""
    try:
        return _load(str(path))
    except ConfigError as e:
        raise ConfigError(one_line(str(e))) from None


def one_line(text: str, limit: int = MAX_LINE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 25] + f"... ({len(text)} characters)"


def _load(name: str) -> Config:
    text = read_small_file(name, "the config file")
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{name}: malformed YAML: {_yaml_problem(e)}") from None
    except RecursionError:
        raise ConfigError(f"{name}: malformed YAML: nested too deep") from None
    if raw is None:
        raise ConfigError(f"{name}: the file has no settings; start from the shipped config.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a mapping of sections at the top, got {type(raw).__name__}")
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{name}: {_explain(str(e), raw)}") from None


MAX_FILE_BYTES = 1 << 20


def read_small_file(name: str, what: str, show_path: bool = True) -> str:
    """The text of a regular file of at most MAX_FILE_BYTES. Raises ConfigError: a FIFO or a
    device would block the service before it has said anything. ``show_path`` False keeps the
    path out of the message (a secret may have been pasted where the path belongs)."""
    prefix = f"{name}: " if show_path else ""
    try:
        info = os.stat(name)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{prefix}{what} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{prefix}{what} is too large ({info.st_size} bytes; at most {MAX_FILE_BYTES})")
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{prefix}cannot read {what}: {getattr(e, 'strerror', None) or e}") from None


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
    if path.rsplit(".", 1)[-1] in SECRET_KEYS:
        # msgspec's own message may quote the value; say what is expected from the schema instead.
        return f"{path} = <hidden>: expected {_expected(path)}"
    value = _lookup(raw, path)
    expected = (msg[0].lower() + msg[1:]).replace("`", "").replace("object", "mapping")
    return f"{path or '<top>'} = {one_line(repr(value), 60)}: {expected}"


def _expected(path: str) -> str:
    section, _, key = path.rpartition(".")
    hint = typing.get_type_hints(_SECTIONS.get(section, Config)).get(key)
    choices = [a for a in typing.get_args(hint) if isinstance(a, str)]
    if typing.get_origin(hint) is Literal and choices:
        return " or ".join(repr(c) for c in choices)
    return "a string" if hint is not None else "a valid value"


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
    "trip": TripConfig,
    "simulation": SimulationConfig,
}


def read_secret(value: str | None, env: str | None, file: str | None) -> str | None:
    """A secret from a file (first line), else an environment variable, else the YAML value.

    Read again on every connection attempt, so a corrected token is picked up without a restart.
    """
    if file:
        try:
            lines = read_small_file(file, "the secret file", show_path=False).splitlines()
        except ConfigError:
            return None
        first = lines[0].strip() if lines else ""
        return first or None
    if env and os.environ.get(env):
        return os.environ[env]
    return value
