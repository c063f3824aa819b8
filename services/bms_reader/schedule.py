"""What the reader asks each cycle: a pure core (no I/O, the time is passed in), like h11.

The requests come from the command table (common/pace/commands.py) by group: ``cycle`` every
cycle, ``capacity`` every ``capacity_every`` cycles, ``info`` at start and every
``info_every_s``, ``config`` at start and every ``config_every_s``; a group that failed is
asked again after RETRY_S. ``master`` addressing asks the one address the line is wired to,
the per-pack commands with FF (the master answers for the whole stack); ``per_address`` asks
every address in turn, each for itself, as daisy-chained RS485 packs need.

An address that does not answer costs one timeout; in ``per_address`` mode it is then left out
for a back-off that doubles from BACKOFF_FIRST_S to BACKOFF_MAX_S, so a dead pack never slows
the others' cycle by more than one timeout now and then. An info or settings command the firmware
refuses (RTN 04, "CID2 not defined"), or leaves unanswered twice running while the same pack
answers the others, is marked unsupported and not asked again until restart.

The commands are those of one layout family (common/pace/families.py). With ``protocol: auto``
the family is not known at start: each cycle asks the candidate's commands, and an analog
request that goes unanswered, is refused with a VER or CID1 error, or gets a reply the candidate
cannot decode moves on to the next candidate (v2.5, EG4, Seplos,
round again) until a reply settles it (``settle``, from the reply's own layout).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.health import Backoff
from common.pace import commands
from common.pace.commands import ReadCommand
from common.pace.families import FAMILIES
from common.pace.frame import ALL_PACKS

RETRY_S = 30.0
BACKOFF_FIRST_S = 5.0
BACKOFF_MAX_S = 60.0
RTN_UNDEFINED = 0x04
# VER error (01) and CID1 error (E1): the frame is another family's. Other codes (a checksum
# error, say; 03 is the LENGTH checksum) come from a BMS that did take the frame for its own.
RTN_OTHER_FAMILY = (0x01, 0xE1)
SILENT_STRIKES = 2
_PERIODIC = ("info", "config")


@dataclass(frozen=True)
class Ask:
    command: ReadCommand
    adr: int  # the frame's ADR
    pack: int  # the COMMAND byte of per-pack requests: FF for the whole stack, else the address

    @property
    def request(self) -> bytes:
        return self.command.request(self.adr, self.pack)


class Schedule:
    def __init__(self, addressing: str, addresses: list[int], capacity_every: int, info_every_s: float,
                 config_every_s: float, protocol: str = "auto"):
        self.family: str | None = None if protocol == "auto" else protocol
        self._candidate = 0
        self.per_address = addressing == "per_address"
        self.addresses = list(addresses)
        self.capacity_every = capacity_every
        self.periods = {"info": info_every_s, "config": config_every_s}
        self.cycles = 0
        self.unsupported: set[str] = set()
        self._due = {(group, a): 0.0 for group in _PERIODIC for a in self.addresses}
        self._sleep_until = {a: 0.0 for a in self.addresses}
        self._backoff = {a: Backoff(BACKOFF_FIRST_S, BACKOFF_MAX_S) for a in self.addresses}
        self._answered: set[int] = set()
        self._silent: set[int] = set()
        self._strikes: dict[str, int] = {}

    @property
    def asking(self) -> str:
        """The family whose commands are asked: the settled one, or auto's current candidate."""
        return self.family or FAMILIES[self._candidate]

    def settle(self, family: str) -> None:
        self.family = family

    def _not_this_family(self, ask: Ask) -> None:
        """An analog request of a candidate family went unanswered or was refused: try the next."""
        if self.family is None and ask.command.block == "analog":
            self._candidate = (self._candidate + 1) % len(FAMILIES)

    def _commands(self, group: str) -> list[ReadCommand]:
        return [c for c in commands.in_group(group, self.asking) if c.name not in self.unsupported]

    def asleep(self, now: float) -> list[int]:
        """Addresses left out of this cycle for their back-off."""
        return [a for a in self.addresses if self._sleep_until[a] > now]

    def plan(self, now: float) -> list[Ask]:
        """The requests of the next cycle, in order: each address's cycle group first."""
        self.cycles += 1
        self._answered.clear()
        self._silent.clear()
        asleep = self.asleep(now)
        groups = ["cycle"] + (["capacity"] if self.capacity_every == 1 or self.cycles % self.capacity_every == 1
                              else [])
        asks = []
        for address in (a for a in self.addresses if a not in asleep):
            due = [g for g in _PERIODIC if now >= self._due[(g, address)]]
            for group in groups + due:
                asks += [self._ask(c, address) for c in self._commands(group)]
            for group in due:
                self._due[(group, address)] = now + self.periods[group]
        return asks

    def _ask(self, command: ReadCommand, address: int) -> Ask:
        pack = address if self.per_address else ALL_PACKS
        return Ask(command, address, pack)

    def skip(self, ask: Ask) -> bool:
        """Whether ``ask`` is to be left out: its address went silent earlier in this cycle, or it
        is another family's than the one a reply of this cycle settled on."""
        return ask.adr in self._silent or ask.command.family != self.asking

    def answered(self, ask: Ask) -> None:
        self._answered.add(ask.adr)
        self._strikes.pop(ask.command.name, None)
        self._backoff[ask.adr].reset()

    def refused(self, ask: Ask, rtn: int) -> None:
        """The BMS answered with an error code. RTN 04 on a periodic command: not supported."""
        self._answered.add(ask.adr)
        if rtn in RTN_OTHER_FAMILY:
            self._not_this_family(ask)
        if rtn == RTN_UNDEFINED and ask.command.group in _PERIODIC:
            self.unsupported.add(ask.command.name)

    def silent(self, ask: Ask, now: float) -> None:
        """No answer. From a pack that answered other requests this cycle, the command is what it
        does not know once that happened SILENT_STRIKES times in a row (one lost reply is not a
        firmware's answer); otherwise the pack is silent, and the rest of its requests are skipped."""
        name = ask.command.name
        self._not_this_family(ask)
        if ask.adr in self._answered:
            if ask.command.group in _PERIODIC:
                self._strikes[name] = self._strikes.get(name, 0) + 1
                if self._strikes[name] >= SILENT_STRIKES:
                    self.unsupported.add(name)
            return
        self._silent.add(ask.adr)
        if self.per_address:
            self._sleep_until[ask.adr] = now + self._backoff[ask.adr].next()

    def undecoded(self, ask: Ask) -> None:
        """A reply in no layout of the candidate family (a settled family keeps counting it)."""
        self._not_this_family(ask)

    def failed(self, ask: Ask, now: float) -> None:
        """Any other failure of a periodic command: its group is asked again soon."""
        group = ask.command.group
        if group in _PERIODIC:
            self._due[(group, ask.adr)] = min(self._due[(group, ask.adr)], now + RETRY_S)
