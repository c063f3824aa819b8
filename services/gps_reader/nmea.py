"""NMEA 0183 to fixes, sans I/O: bytes in, one fix per epoch out.

Lines are cut at CR or LF; leading junk before the last '$' is dropped; every sentence goes
through ``pynmea2.parse(check=True)``, so a missing or wrong checksum is an error. Any talker
is accepted (GP, GN, GL, IN ...): sentences are dispatched on their three-letter type.

Epochs: a receiver sends a burst of sentences per fix. A sentence whose UTC time differs from
the epoch's starts a new epoch, and so does a second RMC/VTG/GGA/GLL/ZDA within one (no-fix
sentences carry no time at all). The reader also closes an epoch when the line goes quiet; a
stall inside the burst (a TCP bridge, Bluetooth, a busy host) can do that too early, so sentences
that turn out to carry the time of the epoch just closed rejoin it, and it is published again
complete. A line is only ever ended by CR or LF, never by a pause.

Validity (docs/gps.md): a fix is valid when some sentence says so (RMC or GLL
status A, GGA quality 1-5, 7 or 8) and none says otherwise (status V, mode indicator N or E,
GGA quality 0 or 6, GSA fix type 1). Speed comes from RMC knots x 1.852 and, when the epoch's
RMC has none, from VTG (its knots x 1.852, or its km/h field when only that is sent), so that
every speed is rounded once from the receiver's own figure. Unknown is None, never 0: no
fix, status V, mode N/E, an empty or non-numeric field, or a value outside 0-250 km/h. Speed is
never derived from successive positions.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import pynmea2

KNOTS_TO_KMH = 1.852
MAX_LINE_CHARS = 200  # gpsd accepts 130; the standard says 82; longer than this is garbage
MAX_SPEED_KMH = 250.0
EPOCH_TYPES = {"RMC", "VTG", "GGA", "GLL", "ZDA"}
TIMED_TYPES = {"RMC", "GGA", "GLL", "ZDA", "GNS"}
BAD_MODES = {"N", "E"}


class BadSentence(Exception):
    """A line that is not a usable sentence; ``kind`` is what gps.link counts it under."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class LineSplitter:
    """Cuts a byte stream into lines at CR or LF. Over-long runs without a line end are dropped
    (and reported once per run) so a binary stream cannot grow the buffer."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> list[bytes | BadSentence]:
        out: list[bytes | BadSentence] = []
        self._buf += data
        while True:
            cut = min((i for i in (self._buf.find(b"\n"), self._buf.find(b"\r")) if i >= 0), default=-1)
            if cut < 0:
                break
            line = bytes(self._buf[:cut])
            del self._buf[:cut + 1]
            if self._overflow:
                self._overflow = False
            elif line:
                out.append(line)
        if len(self._buf) > MAX_LINE_CHARS:
            if not self._overflow:
                out.append(BadSentence("too_long", f"more than {MAX_LINE_CHARS} characters without a line end"))
            self._overflow = True
            self._buf.clear()
        return out

    def flush(self) -> list[bytes]:
        """The unfinished line, when the input has ended (a file without a final newline)."""
        line, self._buf = bytes(self._buf), bytearray()
        return [line] if line and not self._overflow else []


def parse_line(line: bytes) -> tuple[pynmea2.NMEASentence, bool]:
    """Parse one line; returns the sentence and whether junk preceded it. Raises BadSentence."""
    if len(line) > MAX_LINE_CHARS:
        raise BadSentence("too_long", f"{len(line)} characters")
    start = line.rfind(b"$")
    if start < 0:
        kind = "partial" if all(32 <= b < 127 for b in line) else "junk"
        raise BadSentence(kind, f"no '$' in {line[:40]!r}")
    text = line[start:]
    if not all(32 <= b < 127 for b in text):
        raise BadSentence("junk", f"non-ASCII bytes in {text[:40]!r}")
    try:
        sentence = pynmea2.parse(text.decode("ascii"), check=True)
    except pynmea2.ChecksumError as e:
        raise BadSentence("checksum", str(e)) from None
    except pynmea2.SentenceTypeError as e:
        raise BadSentence("unknown", str(e)) from None
    except (pynmea2.ParseError, ValueError, TypeError) as e:
        kind = "checksum" if "checksum" in str(e).lower() else "parse"
        raise BadSentence(kind, str(e)) from None
    if isinstance(sentence, pynmea2.QuerySentence):
        raise BadSentence("unknown", f"a query, not data: {text[:40]!r}")
    return sentence, start > 0


def is_fix_data(sentence: pynmea2.NMEASentence) -> bool:
    """Standard talker sentences; proprietary ones ($PGRME, $PMTK, $PUBX ...) are valid but unused."""
    return isinstance(sentence, pynmea2.TalkerSentence)


@dataclass
class Epoch:
    """The sentences of one fix epoch, by type (the last of each type kept)."""

    time: dt.time | None = None
    by_type: dict[str, pynmea2.NMEASentence] = field(default_factory=dict)
    gsa: list[pynmea2.NMEASentence] = field(default_factory=list)
    started_at: float | None = None  # when its first sentence arrived (system time), set by the reader

    def add(self, sentence: pynmea2.NMEASentence) -> None:
        kind = sentence.sentence_type
        if kind == "GSA":
            self.gsa.append(sentence)
        self.by_type[kind] = sentence
        if self.time is None:
            self.time = _time_of(sentence)

    def absorb(self, later: Epoch) -> None:
        """Take the sentences of ``later``, the rest of this epoch's burst."""
        self.by_type.update(later.by_type)
        self.gsa += later.gsa


def _time_of(sentence) -> dt.time | None:
    if sentence.sentence_type not in TIMED_TYPES:
        return None
    value = getattr(sentence, "timestamp", None)
    return value if isinstance(value, dt.time) else None


class EpochAssembler:
    """Groups sentences into epochs. ``add`` returns the epoch a sentence closed, if any."""

    def __init__(self) -> None:
        self.current: Epoch | None = None
        self.date: dt.date | None = None
        self._closed: Epoch | None = None  # the epoch closed last, which late sentences may rejoin

    def add(self, sentence: pynmea2.NMEASentence) -> Epoch | None:
        kind = sentence.sentence_type
        closed = None
        if self.current is not None:
            t = _time_of(sentence)
            new_time = t is not None and self.current.time is not None and t != self.current.time
            repeated = kind in EPOCH_TYPES and kind in self.current.by_type
            if new_time or repeated:
                closed = self._close()
        if self.current is None:
            self.current = Epoch()
        self.current.add(sentence)
        self._note_date(sentence)
        self._rejoin()
        return closed

    def flush(self) -> Epoch | None:
        closed = self._close()
        return closed if closed and closed.by_type else None

    def _close(self) -> Epoch | None:
        self._closed, self.current = self.current, None
        return self._closed

    def _rejoin(self) -> None:
        """An epoch that has just learnt its time and finds it is the time of the epoch closed
        before it is the rest of that epoch's burst: the two become one again (unless both have
        a sentence of the same fix type, which makes them two epochs of one second)."""
        current, closed = self.current, self._closed
        if closed is None or current is closed or current.time is None or current.time != closed.time:
            return
        if EPOCH_TYPES & current.by_type.keys() & closed.by_type.keys():
            return
        closed.absorb(current)
        self.current, self._closed = closed, None

    def _note_date(self, sentence) -> None:
        kind = sentence.sentence_type
        if kind == "RMC" and isinstance(getattr(sentence, "datestamp", None), dt.date):
            self.date = sentence.datestamp
        elif kind == "ZDA":
            try:
                self.date = dt.date(int(sentence.year), int(sentence.month), int(sentence.day))
            except (TypeError, ValueError):
                pass


def _float(value) -> float | None:
    """pynmea2 hands back the raw string when a field does not convert; None for that."""
    try:
        number = float(value)
    except (TypeError, ValueError, ArithmeticError):
        return None
    return number if math.isfinite(number) else None


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _mode(sentence, attribute: str) -> str | None:
    value = getattr(sentence, attribute, None) if sentence is not None else None
    return value if isinstance(value, str) and value else None


def is_valid(epoch: Epoch) -> bool:
    t = epoch.by_type
    rmc, gll, vtg, gga = t.get("RMC"), t.get("GLL"), t.get("VTG"), t.get("GGA")
    good, bad = False, False
    for sentence, mode_attr in ((rmc, "mode_indicator"), (gll, "faa_mode")):
        if sentence is not None:
            good |= sentence.status == "A"
            bad |= sentence.status != "A" or _mode(sentence, mode_attr) in BAD_MODES
    bad |= _mode(vtg, "faa_mode") in BAD_MODES
    if gga is not None:
        quality = _int(gga.gps_qual)
        if quality is not None:
            good |= quality in (1, 2, 3, 4, 5, 7, 8)
            bad |= quality in (0, 6)
    bad |= any(str(g.mode_fix_type) == "1" for g in epoch.gsa)
    return good and not bad


def speed_km_h(epoch: Epoch) -> float | None:
    """Speed over ground of a valid epoch, or None when the receiver gave none we can trust."""
    rmc, vtg = epoch.by_type.get("RMC"), epoch.by_type.get("VTG")
    speed = None
    if rmc is not None and (knots := _float(rmc.spd_over_grnd)) is not None:
        speed = knots * KNOTS_TO_KMH
    elif vtg is not None:
        knots = _float(vtg.spd_over_grnd_kts)
        speed = knots * KNOTS_TO_KMH if knots is not None else _float(vtg.spd_over_grnd_kmph)
    if speed is None or not 0.0 <= speed <= MAX_SPEED_KMH:
        return None
    return round(speed, 3)


def _position(epoch: Epoch) -> tuple[float | None, float | None]:
    for kind in ("RMC", "GGA", "GLL"):
        s = epoch.by_type.get(kind)
        if s is not None and s.lat and s.lon:
            try:
                return round(s.latitude, 7), round(s.longitude, 7)
            except (TypeError, ValueError):
                continue
    return None, None


def fix_fields(epoch: Epoch, date: dt.date | None) -> dict:
    """The gps.fix data (docs/contract.md) of one epoch; ``date`` is the last date the receiver sent."""
    t = epoch.by_type
    rmc, vtg, gga = t.get("RMC"), t.get("VTG"), t.get("GGA")
    valid = is_valid(epoch)
    utc = None
    if epoch.time is not None and date is not None:
        utc = dt.datetime.combine(date, epoch.time.replace(tzinfo=dt.UTC)).timestamp()
    fields = {"valid": valid, "gps_utc": utc,
              "fix_quality": _int(gga.gps_qual) if gga is not None else None,
              "mode": _mode(rmc, "mode_indicator") or _mode(vtg, "faa_mode") or _mode(t.get("GLL"), "faa_mode")}
    if not valid:
        return fields
    lat, lon = _position(epoch)
    course = _float(rmc.true_course) if rmc is not None else None
    if course is None and vtg is not None:
        course = _float(vtg.true_track)
    hdop = _float(gga.horizontal_dil) if gga is not None else None
    if hdop is None and epoch.gsa:
        hdop = _float(epoch.gsa[-1].hdop)
    fields.update(speed_km_h=speed_km_h(epoch), course_deg=course, lat=lat, lon=lon,
                  alt_m=_float(gga.altitude) if gga is not None else None,
                  sats=_int(gga.num_sats) if gga is not None else None, hdop=hdop)
    return fields
