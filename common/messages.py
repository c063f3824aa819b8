"""The bus message contract: one typed, versioned definition per topic.

Wire layout (see docs/contract.md for the full table):

    frame 1: topic, ASCII, e.g. b"bms.snapshot"   (SUB prefix matching works on it)
    frame 2: msgpack map, the envelope
             {"v": 1, "src": "bms_reader", "seq": 42, "ts": 1764000000.123, "data": {...}}

``v`` is the schema version of that topic's message. A change a reader of the old version
cannot follow (a field removed, renamed or retyped) bumps it; a new field with a default does
not, and readers ignore fields they do not know, so services can be upgraded one at a time.
``seq`` counts per publisher and topic from 0 at process start, so a gap means lost messages
on that topic and a drop back means the publisher restarted.

Names carry their units. A value that is unknown is None (msgpack nil), never 0; a number is
finite (NaN and infinities do not fit the contract: a reader never has to guess what "nan %"
means). Publishers and subscribers both go through :func:`encode` / :func:`decode`, so what is
sent is checked against the same definition that readers use. A body nested deeper than the
decoder can follow is refused as ``depth``; its size is bounded by the bus before it gets here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

ENVELOPE_VERSION = 1

# A finite number: msgspec's range check is false for NaN and for the infinities.
Number = Annotated[float, msgspec.Meta(ge=-1e15, le=1e15)]


class MessageError(ValueError):
    """A body that does not fit the contract. ``kind`` says how (for counting)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class Data(msgspec.Struct, kw_only=True):
    """Base of every topic's data: keyword-only, unknown fields tolerated."""


class Pack(Data):
    """One battery pack of a PACE stack, 1-based ``pack``.

    Analog values come from CID2 0x42, the alarm and state fields from CID2 0x44. A field
    the BMS did not report this cycle is None. ``online`` is False for a pack the master
    lists but that sends only zeros (a slave that is off or not wired).
    """

    pack: int
    online: bool = True
    cells_mv: list[int] = []
    temps_c: list[Number] = []
    current_a: Number | None = None
    voltage_v: Number | None = None
    power_w: Number | None = None
    remaining_ah: Number | None = None
    full_ah: Number | None = None
    design_ah: Number | None = None
    cycles: int | None = None
    soc_pct: Number | None = None
    soh_pct: Number | None = None
    cell_min_mv: int | None = None
    cell_max_mv: int | None = None
    cell_delta_mv: int | None = None
    warnings: list[str] | None = None
    protections: list[str] | None = None
    faults: list[str] | None = None
    indicators: list[str] | None = None
    cell_alarms: dict[int, str] | None = None
    temp_alarms: dict[int, str] | None = None
    pack_alarms: dict[str, str] | None = None
    balancing: list[int] | None = None
    charge_fet: bool | None = None
    discharge_fet: bool | None = None
    status_raw: dict[str, int] | None = None
    reported_soc_pct: Number | None = None
    reported_soh_pct: Number | None = None
    extra_hex: str | None = None


class BmsSnapshot(Data):
    pack_count: int | None
    packs: list[Pack]
    poll_s: Number | None = None


class BmsInfo(Data):
    protocol_version: str | None = None
    address: int | None = None
    software_version: str | None = None
    bms_serial: str | None = None
    pack_serial: str | None = None
    pack_count: int | None = None
    protocol: str | None = None  # the layout family in use: "25", "20-eg4", ... (bms_reader.protocol)
    clock_drift_s: Number | None = None  # BMS clock minus trusted time, at the last B1 read
    clock_set_ts: Number | None = None  # when the reader last set the BMS clock (B2); None: not since start
    clock_note: str | None = None  # why the clock was or was not set


class PackConfig(Data):
    """The settings one BMS reported: command name -> its fields (common/pace/config.py names
    them with their units), as read; a command it did not answer is absent."""

    address: int
    settings: dict[str, dict[str, Any]] = {}
    read_ts: Number | None = None


class BmsConfig(Data):
    packs: list[PackConfig]
    unsupported: list[str] = []  # commands the firmware refused (RTN 04 or silence): not asked again


LinkState = Literal["connecting", "up", "down"]


class Link(Data):
    """Health of a device link. ``errors`` counts failures by kind since the service started."""

    state: LinkState
    port: str
    errors: dict[str, int] = {}
    last_ok_ts: Number | None = None
    error: str | None = None


class GpsLink(Link):
    sentences: int = 0
    bad_sentences: int = 0
    source: str | None = None


class GpsFix(Data):
    valid: bool
    speed_km_h: Number | None = None
    course_deg: Number | None = None
    lat: Number | None = None
    lon: Number | None = None
    alt_m: Number | None = None
    sats: int | None = None
    hdop: Number | None = None
    fix_quality: int | None = None
    gps_utc: Number | None = None
    mode: str | None = None


class UplinkStatus(Data):
    connected: bool
    server: str
    queued: int
    sent: int
    dropped: int
    last_ack_ts: Number | None = None
    error: str | None = None
    oldest_queued_age_s: Number | None = None
    dead_letters: int = 0
    clock_source: str | None = None
    clock_reason: str | None = None
    rate_limits: str | None = None
    outbox_state: Literal["ok", "full", "recovered", "failed"] = "ok"
    budget: str | None = None  # the data-point plan in words (services/tb_uplink/budget.py)
    forecast_points_per_hour: int | None = None
    monthly_budget_lasts_h: Number | None = None  # hours of driving; None: no monthly limit
    points_sent_last_hour: int | None = None  # data points published in the last hour (telemetry and attributes)
    thinned: int = 0  # records the plan left nothing of, not sent (kept whole: kept) since start
    kept: int = 0  # full records the server got only part of, kept in the outbox (thinned_keep_days)


class TripState(Data):
    """The trip computer (services/trip): this trip's counters and rates, the laps, the totals.
    Rates and range are None until enough distance and energy have been seen to trust them."""

    distance_km: Number
    energy_out_wh: Number  # discharge
    energy_in_wh: Number  # charge and regeneration
    wh_per_km: Number | None = None  # trip average, net (out less in)
    wh_per_km_recent: Number | None = None  # over the last recent_km
    range_km: Number | None = None  # remaining energy at the recent rate
    time_to_empty_s: Number | None = None  # while discharging
    time_to_full_s: Number | None = None  # while charging
    remaining_wh: Number | None = None
    power_w: Number | None = None  # all packs, negative = discharging
    trip_started_ts: Number | None = None
    distance_source: Literal["speed", "position", "speed+position"] = "speed"
    distance_note: str | None = None  # when GPS speed and positions disagree
    bms_gaps: int = 0  # BMS data gaps longer than max_gap_s: not integrated
    bms_gap_s: Number = 0.0
    gps_gaps: int = 0
    gps_gap_s: Number = 0.0
    laps: int | None = None  # None: no trip.start_line, so laps are unknown (not 0)
    last_lap_s: Number | None = None
    best_lap_s: Number | None = None
    last_lap_wh: Number | None = None
    last_lap_wh_per_km: Number | None = None
    total_distance_km: Number = 0.0
    total_energy_out_wh: Number = 0.0
    total_energy_in_wh: Number = 0.0
    store_state: Literal["ok", "recovered", "failed"] = "ok"  # the counters' file
    store_error: str | None = None


@dataclass(frozen=True)
class Topic:
    name: str
    schema: type[Data]
    version: int
    publisher: str
    period: str


TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic("bms.snapshot", BmsSnapshot, 1, "bms_reader", "every poll cycle"),
        Topic("bms.info", BmsInfo, 1, "bms_reader", "on change, and every 60 s"),
        Topic("bms.link", Link, 1, "bms_reader", "every 1 s"),
        Topic("bms.config", BmsConfig, 1, "bms_reader", "after each settings read (config_every_s), and every 60 s"),
        Topic("gps.fix", GpsFix, 1, "gps_reader", "each fix epoch"),
        Topic("gps.link", GpsLink, 1, "gps_reader", "every 1 s"),
        Topic("uplink.status", UplinkStatus, 1, "tb_uplink", "every 1 s"),
        Topic("trip.state", TripState, 1, "trip", "every 1 s"),
    )
}


class _Envelope(msgspec.Struct):
    v: int
    src: str
    seq: int
    # Seconds since 1970, finite and before the year 5138: a reader must never meet inf or NaN.
    ts: Annotated[float, msgspec.Meta(ge=0, le=1e11)]
    data: msgspec.Raw


@dataclass(frozen=True)
class Message:
    """A received, checked bus message."""

    topic: str
    src: str
    seq: int
    ts: float
    data: Data


_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)
_data_decoders = {name: msgspec.msgpack.Decoder(t.schema) for name, t in TOPICS.items()}


def encode(topic: str, src: str, seq: int, ts: float, data: Data) -> bytes:
    """Envelope ``data`` for ``topic``. Raises MessageError if it does not fit the contract."""
    spec = TOPICS.get(topic)
    if spec is None:
        raise MessageError("topic", f"unknown topic {topic!r}")
    if not isinstance(data, spec.schema):
        raise MessageError("shape", f"{topic} carries {spec.schema.__name__}, not {type(data).__name__}")
    if not 0 <= ts <= 1e11:  # also false for NaN
        raise MessageError("shape", f"ts {ts!r} is not a time")
    body = _encoder.encode({"v": spec.version, "src": src, "seq": seq, "ts": ts, "data": data})
    # Struct constructors do not check types; decoding what we are about to send does.
    decode(topic, body)
    return body


def decode(topic: str, body: bytes) -> Message:
    """Check and decode one body.

    Raises MessageError of kind ``topic`` (not in the contract), ``garbage`` (not a msgpack
    envelope), ``depth`` (nested beyond what the decoder follows), ``version`` (a schema version
    this reader does not know) or ``shape`` (the data does not fit the topic's definition, a
    number that is not finite included).
    """
    spec = TOPICS.get(topic)
    if spec is None:
        raise MessageError("topic", f"unknown topic {topic!r}")
    try:
        env = _envelope_decoder.decode(body)
    except msgspec.DecodeError as e:  # also ValidationError: not an envelope at all
        raise MessageError("garbage", f"not an envelope: {e}") from None
    except RecursionError:
        raise MessageError("depth", "nested deeper than the decoder follows") from None
    if env.v != spec.version:
        raise MessageError("version", f"{topic} version {env.v}, this reader knows {spec.version}")
    try:
        data = _data_decoders[topic].decode(env.data)
    except msgspec.ValidationError as e:
        raise MessageError("shape", f"{topic}: {e}") from None
    except msgspec.DecodeError as e:
        raise MessageError("garbage", str(e)) from None
    except RecursionError:
        raise MessageError("depth", f"{topic}: nested deeper than the decoder follows") from None
    return Message(topic, env.src, env.seq, env.ts, data)
