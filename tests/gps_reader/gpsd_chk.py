"""What gpsd reported for each epoch of a regression log (its .log.chk file), for comparison.

gpsd prints several TPV reports per epoch. Those printed before the epoch's RMC/VTG arrived can
carry a speed gpsd derived from successive positions (tests/data/nmea/README.md), which a
reader must not imitate. So TPVs are grouped in runs of the same ``time``; the run's figure is
its last TPV, and the run is marked ``from_receiver`` when an RMC or VTG line came in its span.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Run:
    time: float | None          # epoch seconds of the TPVs' "time", None for no-fix reports
    speed_km_h: float | None    # the last TPV's speed x 3.6
    from_receiver: bool         # an RMC or VTG sentence came in this run's span


def runs(chk: Path) -> list[Run]:
    out: list[Run] = []
    saw_speed_sentence = False
    current: Run | None = None
    for line in chk.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("$"):
            if line[3:6] in ("RMC", "VTG"):
                saw_speed_sentence = True
            continue
        if not line.startswith("{"):
            continue
        report = json.loads(line)
        if report.get("class") != "TPV":
            continue
        t = report.get("time")
        when = dt.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() if t else None
        speed = report["speed"] * 3.6 if "speed" in report else None
        if current is not None and current.time == when:
            current.speed_km_h = speed
            current.from_receiver |= saw_speed_sentence
        else:
            current = Run(when, speed, saw_speed_sentence)
            out.append(current)
        saw_speed_sentence = False
    return out
