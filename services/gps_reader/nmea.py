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
import re
from dataclasses import dataclass, field

import pynmea2

KNOTS_TO_KMH = 1.852
MAX_SENTENCE_CHARS = 1024  # the standard says 82; u-blox $PUBX,03 lists every satellite in one
MAX_JSON_CHARS = 16384  # gpsd's JSON reports (a SKY with many satellites runs to a few kB)
MAX_SPEED_KMH = 250.0
EPOCH_TYPES = {"RMC", "VTG", "GGA", "GLL", "ZDA"}
TIMED_TYPES = {"RMC", "GGA", "GLL", "ZDA", "GNS"}
# Sentences that carry no fix and belong to no epoch: a receiver's text messages (start-up
# banners, antenna status) arrive between epochs and must not open one.
NOT_EPOCH_TYPES = {"TXT"}
BAD_MODES = {"N", "E"}


class BadSentence(Exception):
    """A line that is not a usable sentence; ``kind`` is what gps.link counts it under, ``count``
    how many such lines it stands for (a run of junk lines is reported once, counted in full)."""

    def __init__(self, kind: str, detail: str, count: int = 1):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.count = count


_ENDS = (0x0A, 0x0D)  # LF, CR
_PRINTABLE = bytes(range(32, 127))
_TEXT_OR_END = _PRINTABLE + b"\n"
_LINE_RUNS = re.compile(rb"[^\n]+")


class LineSplitter:
    """Frames a byte stream the way gpsd does: a sentence starts at ``$`` and ends at CR or LF,
    never at a pause; a ``$`` before the end starts a new sentence (the cut one is counted
    ``partial``), so a lost line end or a binary frame (u-blox UBX shares the port) costs at most
    the sentence it interrupted. A sentence longer than MAX_SENTENCE_CHARS is dropped as
    ``too_long`` and the hunt for the next ``$`` goes on at once. Bytes outside sentences are
    counted by line: printable text is the ``partial`` tail of a sentence whose start was lost,
    anything else ``junk``, each line once it has ended (so its kind never depends on how the
    bytes were cut into reads). With ``json`` (a gpsd source only), a line that starts with ``{``
    is gpsd's JSON and is passed on."""

    TAIL_KEPT = 80  # of an unfinished junk line: enough to classify it and to show its start

    def __init__(self, json: bool = False) -> None:
        self._json = json
        self._buf = bytearray()
        self._in_sentence = False  # _buf starts with the '$' or '{' of the sentence being received
        self._line_start = True  # the next byte starts a line (where gpsd's JSON may begin)
        self._tail = b""  # the unfinished junk line so far (bounded), counted when it ends
        self._skip_line = False  # the unfinished line is the rest of a too_long sentence, already counted

    def feed(self, data: bytes) -> list[bytes | BadSentence]:
        out: list[bytes | BadSentence] = []
        self._buf += data
        pos = 0
        while pos < len(self._buf):
            pos = self._sentence(pos, out) if self._in_sentence else self._hunt(pos, out)
            if pos < 0:  # a sentence still arriving: keep it
                return out
        self._buf.clear()
        return out

    def flush(self) -> list[bytes]:
        """The unfinished sentence, when the input has ended (a file without a final newline)."""
        line, self._buf, self._in_sentence = bytes(self._buf), bytearray(), False
        return [line] if line and len(line) <= _limit(line) else []

    def _hunt(self, pos: int, out: list) -> int:
        buf = self._buf
        start = buf.find(b"$", pos)
        brace = self._json_start(pos, len(buf) if start < 0 else start)
        if brace >= 0:
            start = brace
        stop = len(buf) if start < 0 else start
        self._junk(bytes(buf[pos:stop]), out, ended=start >= 0)
        if start < 0:
            return len(buf)
        self._in_sentence = True
        return start

    def _json_start(self, pos: int, stop: int) -> int:
        if not self._json:
            return -1
        if self._line_start and pos < stop and self._buf[pos] == 0x7B:
            return pos
        found = [i + 1 for i in (self._buf.find(b"\n{", pos, stop), self._buf.find(b"\r{", pos, stop)) if i >= 0]
        return min(found, default=-1)

    def _sentence(self, pos: int, out: list) -> int:
        """``pos`` is at the sentence's first byte; returns where hunting goes on, or -1 to wait."""
        buf = self._buf
        ends = [i for i in (buf.find(b"\r", pos), buf.find(b"\n", pos)) if i >= 0]
        if buf[pos] == 0x24:  # '$'
            ends += [i for i in (buf.find(b"$", pos + 1),) if i >= 0]
        end = min(ends, default=-1)
        limit = _limit(buf[pos:pos + 1])
        if end < 0 or end - pos > limit:
            if len(buf) - pos <= limit:
                del buf[:pos]
                return -1
            out.append(BadSentence("too_long", f"more than {limit} characters without a line end"))
            pos = self._restart(pos + 1)
            self._skip_line = True  # the rest of it, up to the next line end or '$', is counted
            return pos
        line = bytes(buf[pos:end])
        if buf[end] == 0x24:
            kind = "partial" if _printable(line) else "junk"  # a sentence cut short, or binary with a '$' byte
            out.append(BadSentence(kind, f"ended by the next '$' before its line end: {line[:40]!r}"))
        else:
            out.append(line)
        return self._restart(end)

    def _restart(self, pos: int) -> int:
        self._in_sentence = False
        self._line_start = pos > 0 and self._buf[pos - 1] in _ENDS
        return pos

    def _junk(self, segment: bytes, out: list, ended: bool) -> None:
        """Count the lines of a run of bytes outside any sentence that have ended (at a line end,
        or at the '$' that follows when ``ended``); the unfinished one waits for its end. Done in
        bulk: a flood of junk lines must not cost a Python step per line."""
        if not segment:
            return
        self._line_start = segment[-1] in _ENDS
        text = self._tail + segment.replace(b"\r", b"\n")
        cut = len(text) if ended else text.rfind(b"\n") + 1
        done, rest = text[:cut], text[cut:]
        if self._skip_line and done:
            done = done[done.find(b"\n"):] if b"\n" in done else b""  # the dropped sentence's rest
            self._skip_line = False
        self._tail = b"" if self._skip_line else _bounded(rest, self.TAIL_KEPT)
        runs = _LINE_RUNS.subn(b"", done)[1]
        if runs == 0:
            return
        if not done.translate(None, _TEXT_OR_END):  # all text: tails of sentences whose start was lost
            self._report({"partial": runs}, done, out)
            return
        partial = sum(1 for p in done.split(b"\n") if p and _printable(p))
        self._report({"partial": partial, "junk": runs - partial}, done, out)

    @staticmethod
    def _report(counts: dict[str, int], lines: bytes, out: list) -> None:
        first = lines.lstrip(b"\n")[:40]
        for kind, n in counts.items():
            if n:
                out.append(BadSentence(kind, f"{n} line(s) outside any sentence, the first {first!r}", count=n))


def _bounded(line: bytes, keep: int) -> bytes:
    """The first ``keep`` bytes of an unfinished line, the last of them standing for the rest:
    NUL when the rest held a byte that is not text, so the line is still classified right."""
    if len(line) <= keep:
        return line
    return line[:keep - 1] + (b"\0" if line[keep - 1:].translate(None, _TEXT_OR_END) else b"x")


def _printable(line: bytes) -> bool:
    return not line.translate(None, _PRINTABLE)


def _limit(first: bytes | bytearray) -> int:
    return MAX_JSON_CHARS if first[:1] == b"{" else MAX_SENTENCE_CHARS


def parse_line(line: bytes) -> tuple[pynmea2.NMEASentence, bool]:
    """Parse one line; returns the sentence and whether junk preceded it. Raises BadSentence."""
    if len(line) > MAX_SENTENCE_CHARS:
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
        raise BadSentence("parse", str(e)) from None
    if isinstance(sentence, pynmea2.QuerySentence):
        raise BadSentence("unknown", f"a query, not data: {text[:40]!r}")
    return sentence, start > 0


def is_fix_data(sentence: pynmea2.NMEASentence) -> bool:
    """Standard talker sentences that belong to a fix epoch; proprietary ones ($PGRME, $PMTK,
    $PUBX ...) and text messages ($GPTXT) are valid but unused."""
    return isinstance(sentence, pynmea2.TalkerSentence) and sentence.sentence_type not in NOT_EPOCH_TYPES


@dataclass
class Epoch:
    """The sentences of one fix epoch, by type (the last of each type kept)."""

    time: float | None = None  # seconds of the UTC day (86400-86401 in a leap second)
    by_type: dict[str, pynmea2.NMEASentence] = field(default_factory=dict)
    gsa: list[pynmea2.NMEASentence] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # sentences of each type
    started_at: float | None = None  # when its first sentence arrived (system time), set by the reader

    def add(self, sentence: pynmea2.NMEASentence) -> None:
        kind = sentence.sentence_type
        if kind == "GSA":
            self.gsa.append(sentence)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.by_type[kind] = sentence
        if self.time is None:
            self.time = _time_of(sentence)

    def absorb(self, later: Epoch) -> None:
        """Take the sentences of ``later``, the rest of this epoch's burst."""
        self.by_type.update(later.by_type)
        self.gsa += later.gsa
        for kind, n in later.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + n


def _time_of(sentence) -> float | None:
    """Seconds of the UTC day. pynmea2 cannot build 23:59:60 (a leap second) and hands back the
    raw field, so the field is read here: 23:59:60.5 is 86400.5, after 23:59:59 and before the
    next day's 00:00:00, which is where POSIX time puts it."""
    if sentence.sentence_type not in TIMED_TYPES:
        return None
    value = getattr(sentence, "timestamp", None)
    if isinstance(value, dt.time):
        return value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6
    match = _HHMMSS.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    hours, minutes, seconds = int(match[1]), int(match[2]), float(match[3])
    if hours > 23 or minutes > 59 or seconds >= 61:
        return None
    return hours * 3600 + minutes * 60 + seconds


_HHMMSS = re.compile(r"(\d\d)(\d\d)(\d\d(?:\.\d+)?)")


class CycleEnd:
    """Learns which sentence type ends the receiver's cycle, as gpsd does, so that an epoch can be
    published the moment it is complete instead of after a quiet window. Each epoch closed by the
    start of the next one or by a quiet line votes for its last sentence type, if that type came
    once in it (a GSV or GSA run of varying length cannot mark the end); LEARN_EPOCHS votes in a
    row make it the cycle end. An epoch that ends otherwise (its last sentence lost, the output
    changed), or a sentence of the cycle after the learnt one, unlearns it."""

    LEARN_EPOCHS = 3

    def __init__(self) -> None:
        self.type: str | None = None
        self._candidate: str | None = None
        self._votes = 0

    def vote(self, last_type: str | None) -> None:
        """``last_type``: the epoch's last sentence type, None when it came more than once."""
        if last_type is not None and last_type == self.type:
            return
        self.type = None
        if last_type is None or last_type != self._candidate:
            self._candidate, self._votes = last_type, 0
        if last_type is None:
            return
        self._votes += 1
        if self._votes >= self.LEARN_EPOCHS:
            self.type = last_type

    def unlearn(self) -> None:
        self.type, self._candidate, self._votes = None, None, 0


class EpochAssembler:
    """Groups sentences into epochs. ``add`` returns the epoch a sentence closed, if any;
    ``complete`` says whether the current epoch has just received its cycle's last sentence."""

    def __init__(self) -> None:
        self.current: Epoch | None = None
        self.date: dt.date | None = None
        self.cycle_end = CycleEnd()
        self._closed: Epoch | None = None  # the epoch closed last, which late sentences may rejoin
        self._last_type: str | None = None  # of the current epoch
        self._ended_early = False  # the closed epoch was published on its cycle end

    def add(self, sentence: pynmea2.NMEASentence) -> Epoch | None:
        kind = sentence.sentence_type
        closed = None
        if self.current is not None:
            t = _time_of(sentence)
            new_time = t is not None and self.current.time is not None and t != self.current.time
            repeated = kind in EPOCH_TYPES and kind in self.current.by_type
            if new_time or repeated:
                self._vote()
                closed = self._close()
        elif self._ended_early and _time_of(sentence) is None and kind not in self._closed.by_type:
            # More of the cycle after its supposed last sentence (a type it has not had yet, with
            # no time to say otherwise): that type does not end it.
            self.cycle_end.unlearn()
            self.current, self._closed = self._closed, None
        if self.current is None:
            self.current = Epoch()
        self.current.add(sentence)
        self._last_type = kind
        self._note_date(sentence)
        self._rejoin()
        self._ended_early = False
        return closed

    def _vote(self) -> None:
        once = self.current is not None and self.current.counts.get(self._last_type) == 1
        self.cycle_end.vote(self._last_type if once else None)

    @property
    def complete(self) -> bool:
        return self.current is not None and self._last_type == self.cycle_end.type

    def flush(self, early: bool = False) -> Epoch | None:
        """Close the current epoch: the line went quiet, the input ended, or (``early``) its
        cycle's last sentence has arrived."""
        if not early and self.current is not None:
            self._vote()
        closed = self._close()
        self._ended_early = early and closed is not None
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
        if self._ended_early:
            self.cycle_end.unlearn()  # the epoch was published on a type that does not end it
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
        utc = dt.datetime.combine(date, dt.time(tzinfo=dt.UTC)).timestamp() + epoch.time
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
